"""Bad input gets a clear one-line error before the work, not after it (issue 11): encode and decode."""

import numpy as np
import pytest
import torch
from conftest import cli
from safetensors.torch import save_file

from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.writer import write_video

MODEL = "preset:tiny"


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "c.mp4"
    write_video(path, np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), fps=8)
    return path


@pytest.mark.parametrize("args, message", [
    (["--max-size", "-5"], "--max-size must be >= 1, got -5"),
    (["--tile-overlap", "100000"], "--tile-size/--tile-overlap: overlap (100000) must be at most half"),
    (["--tile-size", "0"], "must be positive"),
    (["--frames", "0"], "--frames >= 1"),
])
def test_encode_usage_errors_before_the_model_and_no_output_folder(clip, tmp_path, args, message):
    # preset:nope cannot load: the usage error must be found first.
    res = cli("encode", clip, "-o", tmp_path / "out" / "lat", "--model", "preset:nope", *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "out").exists()  # a usage error leaves no empty folder behind


def test_decode_usage_errors_before_the_model(clip, tmp_path):
    assert cli("encode", clip, "-o", tmp_path / "lat", "--model", MODEL, "-q").exit_code == 0
    res = cli("decode", tmp_path / "lat", "-o", tmp_path / "rec", "--tile-overlap", "100000", "--model", "preset:nope")
    assert res.exit_code == 2 and "overlap (100000) must be at most half" in res.output
    assert not (tmp_path / "rec").exists()


def test_decode_missing_or_unreadable_latent_says_why(tmp_path):
    res = cli("decode", tmp_path / "nope.safetensors", "-o", tmp_path / "rec")
    assert res.exit_code == 2 and "nope.safetensors: no such file or folder" in res.output
    assert "name no model" not in res.output
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    res = cli("decode", tmp_path / "junk.safetensors", "-o", tmp_path / "rec")
    assert res.exit_code == 2 and "junk.safetensors: not a readable safetensors file" in res.output


@pytest.mark.parametrize("change, message", [
    ({"num_frames": "41"}, "num_frames 41 is more than the 5 encoded frames"),
    ({"fps": "0.0"}, "fps 0 marks an image, but num_frames is 5"),
    ({"fps": "-8.0"}, "fps must be a frame rate >= 0"),
    ({"height": "20"}, "a 20x32 frame padded by"),
])
def test_decode_refuses_edited_metadata_before_decoding(clip, tmp_path, change, message):
    assert cli("encode", clip, "-o", tmp_path / "lat", "--model", MODEL, "-q").exit_code == 0
    path = tmp_path / "lat" / "c.safetensors"
    z, meta = load_latent(path)
    save_file({"latent": z}, str(path), metadata={**meta.to_strings(), **change})
    res = cli("decode", path, "-o", tmp_path / "rec", "--model", MODEL, "-q")
    assert res.exit_code == 1 and "invalid latent metadata" in res.output and message in res.output, res.output
    assert not (tmp_path / "rec" / "c.mp4").exists()


def test_decode_writes_what_was_encoded_for_a_valid_latent(clip, tmp_path):
    """The control for the test above: the unedited latent decodes."""
    assert cli("encode", clip, "-o", tmp_path / "lat", "--model", MODEL, "-q").exit_code == 0
    assert load_latent(tmp_path / "lat" / "c.safetensors")[0].shape == torch.Size([8, 2, 2, 2])
    res = cli("decode", tmp_path / "lat", "-o", tmp_path / "rec", "-q")
    assert res.exit_code == 0 and (tmp_path / "rec" / "c.mp4").exists()
