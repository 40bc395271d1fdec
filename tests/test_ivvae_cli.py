"""IV-VAE through the unchanged CLI: encode/decode with an ``ivvae-tiny`` weights folder, train from the preset
(GAN included), predict, and eval beside PV-VAE."""

import json

import pytest
import torch
from conftest import moving_square
from typer.testing import CliRunner

from pvvae_cli import VideoVAE, load_model
from pvvae_cli.cli.app import app
from pvvae_cli.codec.latents import load_latent
from pvvae_cli.media.video_io import probe
from pvvae_cli.media.writer import write_video
from pvvae_cli.models.ivvae.model import IVVAE

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture
def weights(tmp_path):
    d = tmp_path / "ivvae-tiny"
    IVVAE.from_preset("ivvae-tiny").save_pretrained(d, model_card="# ivvae-tiny (random weights)\n")
    return d


@pytest.fixture
def clips(tmp_path):
    d = tmp_path / "clips"
    for i, t in enumerate((1, 9, 11)):
        write_video(d / f"c{t}.mp4", moving_square(t, seed=i), fps=8.0)
    return d


def test_cli_encode_decode_with_an_ivvae_folder(weights, clips, tmp_path, one_thread):
    lat, rec = tmp_path / "lat", tmp_path / "rec"
    res = runner.invoke(app, ["encode", str(clips), "-o", str(lat), "--model", str(weights), "-q"])
    assert res.exit_code == 0, res.output
    z, meta = load_latent(lat / "c11.safetensors")
    assert z.shape == (8, 4, 2, 2) and meta.num_frames == 11 and meta.model_tag == "t4s16c8"
    res = runner.invoke(app, ["decode", str(lat), "-o", str(rec), "-q"])  # the model is taken from the latents
    assert res.exit_code == 0, res.output
    for t in (1, 9, 11):
        info = probe(rec / f"c{t}.mp4")
        assert (info.num_frames, info.height, info.width) == (t, 32, 32)
    # tiled and streamed through the codec: the latents do not depend on the chunking
    res = runner.invoke(app, ["encode", str(clips / "c9.mp4"), "-o", str(tmp_path / "lat2"), "--model", str(weights),
                              "-q", "--tile", "on", "--tile-size", "32", "--tile-overlap", "16"])
    assert res.exit_code == 0, res.output
    assert load_latent(tmp_path / "lat2" / "c9.safetensors")[0].shape == (8, 3, 2, 2)


def test_cli_train_from_the_preset_with_gan(tmp_path, one_thread):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--preset", "ivvae-tiny", "--data", "synthetic:shapes", "--frames", "5",
                              "--size", "32", "--batch-size", "1", "--steps", "3", "--workers", "0",
                              "--gan-start-step", "1", "--disc-channels", "8",
                              "--val-clips", "1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["preset"] == "ivvae-tiny" and saved["lr"] == 3e-4
    model = load_model(out / "weights")
    assert isinstance(model, IVVAE) and model.config.name == "ivvae-tiny"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("gan" in r for r in records if r["kind"] == "train")


def test_cli_predict_with_an_ivvae_folder(weights, tmp_path, one_thread):
    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_square(), fps=10.0)
    res = runner.invoke(app, ["predict", str(clip), "-o", str(tmp_path / "pred.mp4"), "-m", str(weights),
                              "--context-frames", "5", "--future-frames", "8"])
    assert res.exit_code == 0, res.output
    assert "predicted frames 5..12 (8) vs ground truth" in res.output
    assert probe(tmp_path / "pred.mp4").num_frames == 13


def test_cli_eval_beside_pvvae(clips, weights, tmp_path, offline, one_thread):
    torch.manual_seed(0)
    VideoVAE.from_preset("tiny").save_pretrained(tmp_path / "pv")
    out_json = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", str(clips), "-m", str(tmp_path / "pv"), "-m", str(weights), "--frames", "9",
                              "--size", "32", "--predict-context", "5", "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    assert f"| metric | {tmp_path / 'pv'} | {weights} |" in res.output
    models = json.loads(out_json.read_text())["models"]
    assert [m["tag"] for m in models] == ["t4s16c8", "t4s16c8"]
    assert all({"psnr", "ssim", "pred_psnr", "copy_psnr"} <= set(m["metrics"]) for m in models)


def test_finetune_decoder_from_ivvae_weights_leaves_the_encoder_bit_identical(weights, tmp_path, one_thread):
    """``--init`` of an IV-VAE folder; stage 3 freezes the encoder (its quant conv included) and the padding token."""
    from conftest import tiny_train_config

    from pvvae_cli.train.trainer import train

    train(tiny_train_config("decoder", preset=None, init=str(weights), steps=2), tmp_path / "ft", quiet=True)
    before, after = load_model(weights).state_dict(), load_model(tmp_path / "ft" / "weights").state_dict()
    for name in before:
        if name.startswith("encoder.") or name == "padding_token":
            assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))
