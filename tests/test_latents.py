import json
import os

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from pvvae_cli import PRESETS, VideoVAE
from pvvae_cli.codec.latents import (
    FORMAT_VERSION,
    LatentFormatError,
    LatentMeta,
    config_hash,
    load_latent,
    load_moments,
    read_meta,
    save_latent,
    weights_hash,
)


def meta(**kw):
    base = dict(model="preset:tiny", config_hash=config_hash(PRESETS["tiny"]), latent_channels=8, model_tag="t4s16c8",
                normalized=False, posterior="mode", source="a/b.mp4", fps=23.976, num_frames=18, height=70, width=100,
                encoded_frames=21, encoded_height=80, encoded_width=112, frame_pad=3, frame_start=2, frame_stride=1,
                target_fps=None, resize=(70, 100), fit="pad", pad=(0, 10, 0, 12), crop=None, tiled=False)
    base.update(kw)
    return LatentMeta(**base)


def test_roundtrip(tmp_path):
    z = torch.randn(8, 6, 5, 7)
    m = meta()
    save_latent(tmp_path / "x.safetensors", z, m, mean=z, logvar=torch.zeros_like(z))
    z2, m2 = load_latent(tmp_path / "x.safetensors")
    assert torch.equal(z, z2) and z2.dtype == torch.float32
    assert m2 == m and m2.pad == (0, 10, 0, 12) and m2.target_fps is None and m2.fps == 23.976
    mean, logvar = load_moments(tmp_path / "x.safetensors")
    assert torch.equal(mean, z) and torch.equal(logvar, torch.zeros_like(z))
    save_latent(tmp_path / "y.safetensors", z.bfloat16(), m)  # stored as float32 whatever the compute dtype
    assert load_latent(tmp_path / "y.safetensors")[0].dtype == torch.float32
    assert load_moments(tmp_path / "y.safetensors") is None


def test_readable_by_plain_safetensors(tmp_path):
    save_latent(tmp_path / "x.safetensors", torch.ones(8, 2, 1, 1), meta())
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        raw = f.metadata()
        assert list(f.keys()) == ["latent"] and f.get_tensor("latent").shape == (8, 2, 1, 1)
    assert raw["format"] == "pvvae-latent" and raw["format_version"] == str(FORMAT_VERSION)
    assert raw["source"] == "a/b.mp4" and raw["model"] == "preset:tiny"  # strings stay plain strings
    assert json.loads(raw["pad"]) == [0, 10, 0, 12] and json.loads(raw["num_frames"]) == 18
    assert all(isinstance(v, str) for v in raw.values())


def test_unknown_format_and_newer_version(tmp_path):
    z = {"latent": torch.zeros(8, 1, 1, 1)}
    safetensors.torch.save_file(z, tmp_path / "other.safetensors", metadata={"format": "pt"})
    with pytest.raises(LatentFormatError, match="not a pvvae latent file"):
        load_latent(tmp_path / "other.safetensors")
    newer = {**meta().to_strings(), "format_version": str(FORMAT_VERSION + 1)}
    safetensors.torch.save_file(z, tmp_path / "newer.safetensors", metadata=newer)
    with pytest.raises(LatentFormatError, match="newer than this pvvae supports"):
        read_meta(tmp_path / "newer.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(LatentFormatError, match="junk.safetensors: not a readable safetensors"):
        load_latent(tmp_path / "junk.safetensors")
    missing = {k: v for k, v in meta().to_strings().items() if k != "num_frames"}
    safetensors.torch.save_file(z, tmp_path / "missing.safetensors", metadata=missing)
    with pytest.raises(LatentFormatError, match="'num_frames' is missing"):
        read_meta(tmp_path / "missing.safetensors")


def test_shape_checks(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        save_latent(tmp_path / "x.safetensors", torch.zeros(4, 1, 1, 1), meta())
    with pytest.raises(ValueError, match=r"\(C, t, h, w\)"):
        save_latent(tmp_path / "x.safetensors", torch.zeros(1, 8, 1, 1, 1), meta())


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    save_latent(tmp_path / "x.safetensors", torch.zeros(8, 6, 5, 7), meta())  # an older complete file
    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_latent(tmp_path / "x.safetensors", torch.ones(8, 6, 5, 7), meta())
    with pytest.raises(KeyboardInterrupt):
        save_latent(tmp_path / "new.safetensors", torch.ones(8, 6, 5, 7), meta())
    assert os.listdir(tmp_path) == ["x.safetensors"]  # no temp file, no partial new file
    assert torch.equal(load_latent(tmp_path / "x.safetensors")[0], torch.zeros(8, 6, 5, 7))  # old one intact


def test_hashes():
    tiny = PRESETS["tiny"]
    # Latent files record this hash and decoding compares it: a change orphans every latent file written before.
    assert config_hash(tiny) == "bbee97f861891937"
    assert config_hash(tiny) == config_hash(tiny.replace(name="renamed"))  # the display name does not count
    assert config_hash(tiny) != config_hash(tiny.replace(base_channels=16))
    assert config_hash(tiny) != config_hash(tiny.replace(latents_mean=(0.0,) * 8, latents_std=(1.0,) * 8))
    torch.manual_seed(0)
    a = VideoVAE.from_preset("tiny")
    torch.manual_seed(0)
    b = VideoVAE.from_preset("tiny")
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        b.decoder.conv_out.bias[0] += 1e-3
    assert weights_hash(a) != weights_hash(b)


@pytest.mark.parametrize("change, message", [
    (dict(num_frames=41), "num_frames 41 is more than the 21 encoded frames"),
    (dict(num_frames=17), "num_frames 17 \\+ frame_pad 3 is not encoded_frames 21"),
    (dict(fps=0.0), "fps 0 marks an image, but num_frames is 18"),
    (dict(fps=-5.0), "fps must be a frame rate >= 0"),
    (dict(height=60, resize=None), "a 60x100 frame padded by \\(0, 10, 0, 12\\) is not the encoded 80x112"),
    (dict(width=101, resize=None), "is not the encoded 80x112"),
    (dict(fit="crop", crop=(0, 0, 64, 96)), "crop box"),
    (dict(encoded_height=96, pad=(0, 26, 0, 12)), "latent shape \\(8, 6, 5, 7\\) does not match its metadata"),
    (dict(latent_channels=4), "latent shape \\(8, 6, 5, 7\\) is not \\(4, t, h, w\\)"),
])
def test_every_metadata_field_is_validated_on_load(tmp_path, change, message):
    """Metadata edited by hand (or by another tool) is refused on load, naming the field, before any decoding."""
    from safetensors.torch import save_file

    good = meta()
    save_latent(tmp_path / "x.safetensors", torch.zeros(8, 6, 5, 7), good)
    strings = good.replace(**change).to_strings()
    save_file({"latent": torch.zeros(8, 6, 5, 7)}, str(tmp_path / "x.safetensors"), metadata=strings)
    with pytest.raises(LatentFormatError, match=message) as e:
        load_latent(tmp_path / "x.safetensors")
    assert str(tmp_path / "x.safetensors") in str(e.value)
