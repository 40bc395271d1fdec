"""`pvvae predict` and the prediction library: frame-count rules, causality of the decoded context, padding
choices, the copy-last-frame baseline, latent files as context, and the CLI's errors."""

import os

import numpy as np
import pytest
import torch
from conftest import moving_square, run_pvvae
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.codec.prediction import (
    check_prediction_frames,
    copy_last_frame,
    predict_from_latents,
    predict_future,
    score_prediction,
)
from pvvae_cli.media.video_io import probe
from pvvae_cli.media.writer import write_video

runner = CliRunner()


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, moving_square(), fps=10.0)
    return path


@pytest.fixture
def weights(tmp_path):
    d = tmp_path / "tiny"
    VideoVAE.from_preset("tiny").save_pretrained(d)
    return d


@pytest.fixture
def gaussian_weights(tmp_path):
    d = tmp_path / "tiny_gauss"
    VideoVAE.from_preset("tiny", padding_mode="gaussian").save_pretrained(d)
    return d


# ------------------------------------------------------------------------------------------------ library
def test_frame_count_rules_name_nearest_values():
    check_prediction_frames(1, 4, 4)
    check_prediction_frames(5, 12, 4)
    with pytest.raises(ValueError, match=r"got 7; nearest valid: 5 or 9"):
        check_prediction_frames(7, 4, 4)
    with pytest.raises(ValueError, match=r"got 0; nearest valid: 1$"):
        check_prediction_frames(0, 4, 4)
    with pytest.raises(ValueError, match=r"got 6; nearest valid: 4 or 8"):
        check_prediction_frames(5, 6, 4)
    with pytest.raises(ValueError, match=r"got 0; nearest valid: 4$"):
        check_prediction_frames(5, 0, 4)
    # The rule is the model's: t8 takes 1 + 8a context frames and multiples of 8 in the future.
    check_prediction_frames(9, 8, 8)
    with pytest.raises(ValueError, match=r"1 \+ 8a .*got 5; nearest valid: 1 or 9"):
        check_prediction_frames(5, 8, 8)
    with pytest.raises(ValueError, match=r"multiple of 8 .*got 4; nearest valid: 8$"):
        check_prediction_frames(9, 4, 8)


def test_predict_future_shapes_and_causal_context(tiny):
    context = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    out = predict_future(tiny, context, 8)
    assert out.shape == (2, 3, 13, 32, 32)
    assert out.min() >= -1 and out.max() <= 1
    # The decoder is causal: the first 5 frames are exactly the reconstruction of the context alone.
    with torch.no_grad():
        recon = tiny.decode(tiny.encode(context).mode()).clamp(-1, 1)
    assert torch.allclose(out[:, :, :5], recon, atol=1e-5)
    # Learned padding token (zero-initialised) vs Gaussian padding: the futures differ, the context does not.
    gen = torch.Generator().manual_seed(0)
    noisy = predict_future(tiny, context, 8, padding="gaussian", generator=gen)
    assert torch.allclose(noisy[:, :, :5], out[:, :, :5], atol=1e-5)
    assert not torch.allclose(noisy[:, :, 5:], out[:, :, 5:], atol=1e-3)
    again = predict_future(tiny, context, 8, padding="gaussian", generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def one_pass_prediction(vae, context, future_frames, padding="learnable", generator=None):
    """What predict computed before 0.11: the whole clip encoded and decoded in one untiled pass."""
    with torch.no_grad():
        z = vae.encode(context).mode()
        z = vae.pad_latents(z, future_frames // vae.config.temporal_compression, mode=padding, generator=generator)
        return vae.decode(z).clamp(-1, 1)


@pytest.mark.parametrize("padding", ["learnable", "gaussian"])
def test_streamed_prediction_equals_the_one_pass_prediction(tiny, padding):
    # Issue 28 (M3): predict goes through the codec's streaming encode_chunk/decode_chunk; same frames as before.
    torch.nn.init.normal_(tiny.padding_token, std=0.5)  # a learned token that is not zero
    context = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    want = one_pass_prediction(tiny, context, 8, padding, torch.Generator().manual_seed(3))
    for chunk in (1, 2):
        got = predict_future(tiny, context, 8, padding, torch.Generator().manual_seed(3), chunk_latents=chunk)
        assert got.shape == want.shape == (1, 3, 17, 32, 32)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_tiled_prediction_blends_tiles_like_decode(tiny):
    # A frame larger than the tile goes through the codec's tiles (one stream per tile), as pvvae decode does.
    from pvvae_cli.codec.pipeline import Codec
    from pvvae_cli.codec.tiling import TileSpec

    spec = TileSpec(32, 16)
    z = torch.randn(1, 8, 2, 4, 4)  # 5 context frames of 64x64
    got = predict_from_latents(tiny, z, 4, tile="on", tile_spec=spec)
    assert got.shape == (1, 3, 9, 64, 64)
    codec = Codec(tiny, "tiny", torch.device("cpu"), torch.float32)
    with torch.no_grad():
        padded = tiny.pad_latents(z, 1, mode="learnable")
    want = torch.cat(list(codec.decode_stream(padded, True, spec)), dim=2).clamp(-1, 1)
    torch.testing.assert_close(got, want)
    untiled = predict_from_latents(tiny, z, 4, tile="off")
    assert not torch.allclose(got, untiled, atol=1e-4)  # tiles really ran


def test_learned_padding_needs_a_padding_token():
    vae = VideoVAE.from_preset("tiny", padding_mode="gaussian").eval()
    assert vae.padding_token is None
    with pytest.raises(ValueError, match="no learned padding tokens.*gaussian"):
        predict_future(vae, torch.zeros(1, 3, 1, 32, 32), 4, padding="learnable")
    assert predict_future(vae, torch.zeros(1, 3, 1, 32, 32), 4).shape[2] == 5  # auto -> gaussian


def test_predict_from_latents_frame_count(tiny):
    z = torch.randn(1, 8, 2, 2, 2)  # 2 latent frames = 5 context frames
    assert predict_from_latents(tiny, z, 4).shape == (1, 3, 9, 32, 32)


def test_copy_baseline_and_scores():
    frames = torch.from_numpy(moving_square(9)).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, 9, 32, 32)
    x = frames.unsqueeze(0)
    truth = x[:, :, 5:]
    last = x[:, :, 4:5]
    assert copy_last_frame(x[:, :, :5], 4).shape == (1, 3, 4, 32, 32)
    perfect, _ = score_prediction(truth, truth, last)
    assert perfect.psnr == 100.0 and perfect.beats_copy
    assert perfect.copy_psnr < 40 and perfect.copy_ssim < 1  # the square moves: standing still is imperfect
    standing, per = score_prediction(copy_last_frame(last, 4), truth, last)
    assert standing.psnr == pytest.approx(standing.copy_psnr) and not standing.beats_copy
    assert per["psnr"].shape == (1,)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_predict_scores_and_writes(clip, weights, tmp_path):
    out = tmp_path / "pred.mp4"
    res = runner.invoke(app, ["predict", str(clip), "-o", str(out), "-m", str(weights),
                              "--context-frames", "5", "--future-frames", "8"])
    assert res.exit_code == 0, res.output
    assert "predicted frames 5..12 (8) vs ground truth" in res.output
    assert "copy last frame" in res.output and "copying the last observed frame (PSNR" in res.output
    info = probe(out)
    assert (info.num_frames, info.width, info.height, info.fps) == (13, 32, 32, 10.0)


def test_cli_predict_side_by_side_and_partial_truth(clip, weights, tmp_path):
    out = tmp_path / "sbs.mp4"
    res = runner.invoke(app, ["predict", str(clip), "-o", str(out), "-m", str(weights), "--side-by-side",
                              "--future-frames", "8"])
    assert res.exit_code == 0, res.output
    assert (probe(out).width, probe(out).height) == (64, 32)
    # 13 frames: context 9 + future 8 has only 4 true future frames; scored on those, no side-by-side.
    res = runner.invoke(app, ["predict", str(clip), "-o", str(out), "-m", str(weights), "--side-by-side",
                              "--context-frames", "9", "--future-frames", "8"])
    assert res.exit_code == 0, res.output
    assert "only 4 of the 8 future frames" in res.output
    assert probe(out).num_frames == 17 and probe(out).width == 32


def test_cli_predict_errors(clip, weights, gaussian_weights, tmp_path):
    out = str(tmp_path / "x.mp4")
    res = runner.invoke(app, ["predict", str(clip), "-o", out, "-m", str(weights), "--context-frames", "7"])
    assert res.exit_code == 2 and "--context-frames must be 1 + 4a" in res.output and "5 or 9" in res.output
    res = runner.invoke(app, ["predict", str(clip), "-o", out, "-m", str(weights), "--future-frames", "6"])
    assert res.exit_code == 2 and "nearest valid: 4 or 8" in res.output
    res = runner.invoke(app, ["predict", str(clip), "-o", out, "-m", str(weights), "--context-frames", "17"])
    assert res.exit_code == 2 and "has 13 frames" in res.output and "--context-frames 13 or less" in res.output
    res = runner.invoke(app, ["predict", str(clip), "-o", out, "-m", str(gaussian_weights), "--padding", "learnable"])
    assert res.exit_code == 2 and "no learned padding tokens" in res.output
    odd = tmp_path / "odd.mp4"
    write_video(odd, moving_square(size=40), fps=10.0)
    res = runner.invoke(app, ["predict", str(odd), "-o", out, "-m", str(weights)])
    assert res.exit_code == 2 and "not multiples of 16" in res.output and "--size" in res.output
    res = runner.invoke(app, ["predict", str(odd), "-o", out, "-m", str(weights), "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output


def test_cli_predict_usage_errors_come_before_the_work(clip, tmp_path):
    # "preset:nope" would fail to load: each error below must be found before the model is even looked at.
    def run(*args, out=None):
        res = runner.invoke(app, ["predict", str(clip), "-o", str(out or tmp_path / "p.mp4"), "-m", "preset:nope",
                                  *args])
        assert res.exit_code == 2 and "Traceback" not in res.output and "preset" not in res.output, res.output
        return res.output

    assert "--start must be >= 0, got -2" in run("--start", "-2")
    assert "--fps must be a positive frame rate, got 0" in run("--fps", "0")
    assert "--fps must be a positive frame rate, got -3" in run("--fps", "-3")
    assert "cannot write" in run(out=tmp_path / "p.txt")
    assert "predict writes several frames" in run(out=tmp_path / "p.png")
    assert "is the input file" in run(out=clip)
    (tmp_path / "ro").mkdir(mode=0o500)
    if not os.access(tmp_path / "ro", os.W_OK):  # root may write anywhere
        assert "not writable" in run(out=tmp_path / "ro" / "p.mp4")
    assert not (tmp_path / "p.mp4").exists()


def test_preset_models_are_the_same_in_every_command_and_run():
    """predict, encode, decode and eval load ``preset:NAME`` through ``cli.common.load_model``: its random weights
    must not depend on the global RNG state (predict used to draw them unseeded: two runs, two models)."""
    from pvvae_cli.cli.common import load_model

    torch.manual_seed(1)
    a = load_model("preset:tiny").state_dict()
    torch.manual_seed(2)
    b = load_model("preset:tiny").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    load_model("preset:tiny")
    assert torch.equal(torch.rand(3), want)  # the caller's RNG stream is left as it was


def test_cli_predict_from_latent_file(weights, tmp_path):
    from pvvae_cli.codec.latents import LatentMeta, config_hash, save_latent

    vae = VideoVAE.from_pretrained(weights)
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).mode()[0]  # (8, 2, 2, 2)
    meta = LatentMeta(model=str(weights), config_hash=config_hash(vae.config), latent_channels=8,
                      model_tag=vae.config.tag, normalized=False, posterior="mode", source="clip.mp4", fps=12.0,
                      num_frames=5, height=32, width=32, encoded_frames=5, encoded_height=32, encoded_width=32)
    latent = save_latent(tmp_path / "clip.safetensors", z, meta)
    out = tmp_path / "from_latent.mp4"
    res = runner.invoke(app, ["predict", str(latent), "-o", str(out), "-m", str(weights), "--future-frames", "4"])
    assert res.exit_code == 0, res.output
    info = probe(out)
    assert (info.num_frames, info.fps) == (9, 12.0)
    # The latent is checked against the model as `pvvae decode` checks it (Codec.check_latent).
    other = tmp_path / "other"
    VideoVAE.from_preset("tiny", latent_channels=4).save_pretrained(other)
    res = runner.invoke(app, ["predict", str(latent), "-o", str(out), "-m", str(other)])
    assert res.exit_code == 2 and "latent has 8 channels" in res.output and "expects 4" in res.output
    narrow = tmp_path / "narrow"  # same latent shape, other architecture: refused unless --force
    VideoVAE.from_preset("tiny", base_channels=4).save_pretrained(narrow)
    res = runner.invoke(app, ["predict", str(latent), "-o", str(out), "-m", str(narrow)])
    assert res.exit_code == 2 and "config hash" in res.output and "--force" in res.output
    res = runner.invoke(app, ["predict", str(latent), "-o", str(out), "-m", str(narrow), "--force",
                              "--future-frames", "4"])
    assert res.exit_code == 0, res.output
    assert "(--force)" in res.output and probe(out).num_frames == 9


def test_predict_from_latent_file_undoes_the_encoders_padding(weights, tmp_path):
    """A 40x24 clip is encoded padded to 48x32; the prediction comes back at 40x24, as `pvvae decode` gives it."""
    from pvvae_cli.codec.latents import save_latent
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.prediction import predict_latent_file

    write_video(tmp_path / "odd.mp4", moving_square(5, size=48)[:, :24, :40], fps=10.0)
    codec = Codec(VideoVAE.from_pretrained(weights), str(weights), torch.device("cpu"), torch.float32)
    enc = codec.encode_file(tmp_path / "odd.mp4", EncodeOptions())
    assert enc.meta.pad == (0, 8, 0, 8)
    save_latent(tmp_path / "odd.safetensors", enc.latent, enc.meta)
    pred = predict_latent_file(codec, tmp_path / "odd.safetensors", 4)
    assert pred.output.shape == (1, 3, 9, 24, 40) and pred.context_frames == 5 and pred.source is None
    assert pred.fps == 10.0 and pred.score() is None
    decoded = np.concatenate(list(codec.decode_frames(enc.latent, enc.meta)))  # (5, 24, 40, 3)
    assert np.abs(pred.frames()[:5].astype(int) - decoded).max() <= 1  # the context is what decode gives


def test_console_predict(clip, weights, tmp_path):
    out = tmp_path / "console.mp4"
    res = run_pvvae("predict", clip, "-o", out, "-m", weights, "--future-frames", "4")
    assert res.returncode == 0, res.stderr
    assert "prediction" in res.stdout and out.is_file()
