import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pvvae_cli import VideoVAE
from pvvae_cli.models.weights import WeightsError


@pytest.fixture
def saved(tmp_path, tiny):
    with torch.no_grad():
        tiny.padding_token.normal_()  # make sure non-default parameters survive
    d = tiny.save_pretrained(tmp_path / "w", model_card="# tiny test model\n")
    return tiny, d


def test_save_load_roundtrip(saved):
    vae, d = saved
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["class_name"] == "VideoVAE" and cfg["format_version"] == 1 and cfg["latent_channels"] == 8
    loaded = VideoVAE.from_pretrained(d)
    assert loaded.config == vae.config
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = vae.encode(x), loaded.encode(x)
        assert (a.mean - b.mean).abs().max() <= 1e-6 and (a.logvar - b.logvar).abs().max() <= 1e-6
        assert (vae.decode(a.mean) - loaded.decode(a.mean)).abs().max() <= 1e-6
    assert torch.equal(vae.padding_token, loaded.padding_token)


def test_half_precision_storage_and_release(tmp_path, tiny):
    """``dtype=float16`` halves the file and loads back to fp32 within fp16 rounding; ``release`` names the
    published model beside the config without changing it."""
    d = tiny.save_pretrained(tmp_path / "h", dtype=torch.float16, release={"name": "m", "version": "1.0"})
    assert all(t.dtype == torch.float16 for t in load_file(d / "model.safetensors").values())
    assert json.loads((d / "config.json").read_text())["release"] == {"name": "m", "version": "1.0"}
    loaded = VideoVAE.from_pretrained(d)
    assert loaded.config == tiny.config and loaded.padding_token.dtype == torch.float32
    for (k, a), b in zip(tiny.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), k
    full = tiny.save_pretrained(tmp_path / "f")
    assert (d / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_files(saved):
    _, d = saved
    (d / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors: missing"):
        VideoVAE.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json: missing"):
        VideoVAE.from_pretrained(d)


def test_no_such_folder(tmp_path):
    with pytest.raises(WeightsError, match="no such weights folder"):
        VideoVAE.from_pretrained(tmp_path / "nope")


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"format_version": None}, "format_version None"),
        ({"class_name": "Other"}, "class_name is 'Other'"),
        ({"bogus": 3}, "unknown VAEConfig keys \\['bogus'\\]"),
        ({"base_channels": -4}, "invalid config"),
        ({"release": "v1"}, "release must be"),
    ],
)
def test_bad_config(saved, changes, match):
    _, d = saved
    _edit_config(d, **changes)
    with pytest.raises(WeightsError, match=match):
        VideoVAE.from_pretrained(d)


def test_corrupt_json(saved):
    _, d = saved
    (d / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        VideoVAE.from_pretrained(d)


def test_corrupt_weights(saved):
    _, d = saved
    (d / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        VideoVAE.from_pretrained(d)


def _rewrite(d, fn):
    t = load_file(d / "model.safetensors")
    fn(t)
    save_file(t, d / "model.safetensors")


def test_missing_tensor(saved):
    _, d = saved
    _rewrite(d, lambda t: t.pop("encoder.conv_in.weight"))
    with pytest.raises(WeightsError, match="missing tensors encoder.conv_in.weight"):
        VideoVAE.from_pretrained(d)


def test_unexpected_tensor(saved):
    _, d = saved
    _rewrite(d, lambda t: t.update(extra=torch.zeros(1)))
    with pytest.raises(WeightsError, match="unexpected tensors extra"):
        VideoVAE.from_pretrained(d)


def test_misshaped_tensor(saved):
    _, d = saved
    _rewrite(d, lambda t: t.update({"padding_token": torch.zeros(9)}))
    with pytest.raises(WeightsError, match="mis-shaped tensors padding_token: file \\(9,\\) vs model \\(8,\\)"):
        VideoVAE.from_pretrained(d)


def test_config_channel_mismatch(saved):
    _, d = saved
    _edit_config(d, latent_channels=16)
    with pytest.raises(WeightsError, match="mis-shaped"):
        VideoVAE.from_pretrained(d)


def test_config_without_class_name_is_pvvae(saved):
    """config.json files are read as PV-VAE when they have no class_name (the only family before the registry)."""
    vae, d = saved
    _edit_config(d, class_name=None)
    assert VideoVAE.from_pretrained(d).config == vae.config


def test_registry_load_model(saved):
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.models import registry

    vae, d = saved
    loaded = registry.load_model(d)
    assert isinstance(loaded, VideoVAE) and loaded.config == vae.config and not loaded.training
    assert torch.equal(loaded.padding_token, vae.padding_token)
    preset = registry.load_model("preset:tiny")
    assert isinstance(preset, VideoVAE) and preset.config.name == "tiny" and not preset.training
    with pytest.raises(registry.ModelSpecError, match="unknown preset 'nope'; choose one of \\['base', "):
        registry.load_model("preset:nope")
    with pytest.raises(WeightsError, match="no such weights folder"):
        registry.load_model(d.parent / "nope")
    assert issubclass(registry.ModelSpecError, PvvaeError) and issubclass(registry.ModelSpecError, ValueError)
    assert registry.family_of(vae).class_name == "VideoVAE" == registry.family_of(vae.config).class_name
    assert registry.family_of(vae.config).model_class is VideoVAE
    with pytest.raises(registry.ModelSpecError, match="not a registered model"):
        registry.family_of(object())
    assert set(registry.presets()) == {"tiny", "small", "base", "small-t4s8", "ivvae-tiny", "ivvae-small", "ivvae-z16",
                                       "wan2.1", "wan2.2"}


def test_errors_are_pvvae_errors():
    from pvvae_cli.codec.latents import LatentFormatError
    from pvvae_cli.codec.pipeline import NonFiniteError
    from pvvae_cli.errors import PvvaeError

    for cls, builtin in ((WeightsError, ValueError), (LatentFormatError, ValueError), (NonFiniteError, RuntimeError)):
        assert issubclass(cls, PvvaeError) and issubclass(cls, builtin)


def test_weights_format_imports_no_model():
    """The registry names the class to build: the weights format does not import a model module (no cycle)."""
    import subprocess
    import sys

    code = ("import sys, pvvae_cli.models.weights, pvvae_cli.models.registry; "
            "assert 'pvvae_cli.models.pvvae.model' not in sys.modules, 'weights imports the model'")
    subprocess.run([sys.executable, "-c", code], check=True)
