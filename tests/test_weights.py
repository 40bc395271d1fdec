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
