"""The default model: commands given no --model use the shipped weights (or $PVVAE_MODEL), and say how to fix it
when there are none. The shipped weights themselves, when present, load and beat the bicubic codec of the same size
on an example clip (the full gate is in the model card: `benchmarks/ship_model.py`)."""

import json

import pytest
import torch
from conftest import moving_square
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.media.writer import write_video
from pvvae_cli.models import default

runner = CliRunner()


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, moving_square(9, size=32), fps=8.0)
    return path


def test_no_default_model_is_one_line_with_the_fix(clip, tmp_path, monkeypatch):
    monkeypatch.delenv(default.ENV_VAR, raising=False)
    monkeypatch.setattr(default, "shipped_weights_dir", lambda: tmp_path / "nowhere")
    for args in (["encode", str(clip), "-o", str(tmp_path / "lat")],
                 ["predict", str(clip), "-o", str(tmp_path / "p.mp4")],
                 ["eval", str(clip), "--size", "32", "--frames", "9", "--no-stlpips", "--no-fvd"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, args
        assert "the default model is not at" in res.output and "pass --model" in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "lat").exists()


def test_commands_default_to_pvvae_model(clip, tmp_path, monkeypatch):
    torch.manual_seed(0)
    VideoVAE.from_preset("tiny").save_pretrained(tmp_path / "m")
    monkeypatch.setenv(default.ENV_VAR, str(tmp_path / "m"))
    res = runner.invoke(app, ["encode", str(clip), "-o", str(tmp_path / "lat"), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["decode", str(tmp_path / "lat"), "-o", str(tmp_path / "rec"), "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["predict", str(clip), "-o", str(tmp_path / "p.mp4")])
    assert res.exit_code == 0 and (tmp_path / "p.mp4").is_file(), res.output
    res = runner.invoke(app, ["eval", str(clip), "--size", "32", "--frames", "9", "--no-stlpips", "--no-fvd"])
    assert res.exit_code == 0 and str(tmp_path / "m") in res.output, res.output


shipped = default.shipped_weights_dir()


@pytest.mark.skipif(not (shipped / "model.safetensors").is_file(), reason="no shipped weights in this checkout")
def test_shipped_model_loads_and_beats_bicubic():
    from pvvae_cli.eval.baselines import bicubic_reconstruct, bicubic_size
    from pvvae_cli.eval.protocol import load_clip
    from pvvae_cli.metrics.image import psnr

    assert (shipped / "model.safetensors").stat().st_size < 50 * 2**20
    release = json.loads((shipped / "config.json").read_text())["release"]
    assert release["name"] == default.DEFAULT_MODEL and release["version"]
    assert (shipped / "README.md").read_text().count(release["version"]) >= 1
    vae = VideoVAE.from_pretrained(shipped).eval()
    x = load_clip(shipped.parents[1] / "examples" / "texture_pan.mp4", 17, 64)[None]
    with torch.no_grad():
        y = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    cfg = vae.config
    small = bicubic_size(64, 64, cfg.temporal_compression, cfg.spatial_compression, cfg.latent_channels)
    assert float(psnr(y, x)) > float(psnr(bicubic_reconstruct(x, small), x)) + 1.0


@pytest.mark.parametrize("command", ["encode", "predict", "eval"])
def test_help_names_the_default_model(command):
    # the option help's "[default: ...]" must be escaped, or rich takes it for markup and drops it
    from pvvae_cli.cli.common import DEFAULT_MODEL_HELP

    assert f"weights/{default.DEFAULT_MODEL}" in DEFAULT_MODEL_HELP and f"${default.ENV_VAR}" in DEFAULT_MODEL_HELP
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and "[default: the shipped model, weights/pvvae-small, or $PVVAE_MODEL]" in res.output
