"""`pvvae decode --chunk N`: latent frames per decode step reach the codec and do not change the output (issue 28,
audit finding X11)."""

import numpy as np
import pytest
from conftest import moving_square, scramble
from PIL import Image
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.codec.pipeline import Codec
from pvvae_cli.media.writer import write_video

runner = CliRunner()


@pytest.fixture
def latents(tmp_path):
    weights = tmp_path / "tiny"
    scramble(VideoVAE.from_preset("tiny")).save_pretrained(weights)  # random weights: every tap matters
    write_video(tmp_path / "clip.mp4", moving_square(13), fps=10.0)  # 13 frames = 4 latent frames
    res = runner.invoke(app, ["encode", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "lat"), "--model",
                              str(weights), "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    return tmp_path / "lat", weights


def png_frames(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))])


def test_decode_chunk_reaches_the_codec_and_keeps_the_output(latents, tmp_path, monkeypatch):
    lat, weights = latents
    seen = []
    decode_to_file = Codec.decode_to_file

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("chunk_latents"))
        return decode_to_file(self, *args, **kwargs)

    monkeypatch.setattr(Codec, "decode_to_file", spy)
    outputs = {}
    for chunk in (1, 2, 3):
        out = tmp_path / f"png{chunk}"
        res = runner.invoke(app, ["decode", str(lat), "-o", str(out), "--model", str(weights), "--device", "cpu",
                                  "--format", "png", "--chunk", str(chunk), "-q"])
        assert res.exit_code == 0, res.output
        outputs[chunk] = png_frames(out)
    assert seen == [1, 2, 3]
    assert outputs[1].shape == (13, 32, 32, 3)
    for chunk in (2, 3):  # PNG is lossless: the frames are the decoder's, to a rounding step at most
        diff = np.abs(outputs[chunk].astype(int) - outputs[1].astype(int))
        assert diff.max() <= 1, diff.max()


def test_decode_chunk_must_be_positive(latents, tmp_path):
    lat, weights = latents
    res = runner.invoke(app, ["decode", str(lat), "-o", str(tmp_path / "out"), "--model", str(weights),
                              "--chunk", "0"])
    assert res.exit_code == 2
    assert "--chunk" in res.output
