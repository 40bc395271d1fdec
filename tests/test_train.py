"""The training loop: learning, GAN start, decoder fine-tuning, exact resume, configs and CLI errors."""

import json
import os
import random
import signal

import pytest
import torch
from conftest import read_metrics, requires_cpu_bf16, tiny_train_config
from typer.testing import CliRunner

from pvvae_cli import VideoVAE
from pvvae_cli.cli.app import app
from pvvae_cli.engine.checkpoints import list_checkpoints
from pvvae_cli.engine.rng import restore_rng, rng_state
from pvvae_cli.train.config import ConfigError, build_config
from pvvae_cli.train.losses import reconstruction_terms, weighted_sum
from pvvae_cli.train.objective import PredictiveVAE, predictive_forward, sample_num_dropped
from pvvae_cli.train.synthetic import SyntheticClips
from pvvae_cli.train.trainer import train

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_overfitting_one_batch_lowers_the_loss():
    torch.manual_seed(0)
    vae = VideoVAE.from_preset("tiny").train()
    model = PredictiveVAE(vae)
    x = SyntheticClips("shapes", frames=5, size=32, seed=0)[0][None]
    weights = {"mse": 1.0, "motion": 1.0, "kl": 1e-6}
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)

    def plain_loss() -> float:
        with torch.no_grad():
            out = predictive_forward(vae, x, 0, sample=False)
            return float(weighted_sum(reconstruction_terms(out.recon, x, None, weights), weights))

    before = plain_loss()
    for _ in range(30):
        out = model(x, sample_num_dropped(2, 1.0, rng), sample=True, generator=gen)
        loss = weighted_sum(reconstruction_terms(out.recon, x, out.posterior, weights), weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = plain_loss()
    assert after < 0.5 * before, (before, after)


def test_run_folder_and_gan_starts_exactly_at_its_step(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_train_config(steps=4, gan_start_step=2, ckpt_every=1, keep_checkpoints=10), out, quiet=True)
    assert result.status == "finished" and result.step == 4
    lines = read_metrics(out)
    assert [r["step"] for r in lines] == [0, 1, 2, 3]
    assert [("gan" in r, "d_loss" in r, "gan_scale" in r) for r in lines] == [(False,) * 3] * 2 + [(True,) * 3] * 2
    for r in lines:
        assert {"loss", "mse", "motion", "kl", "lr", "grad_norm", "samples_per_s", "dropped"} <= set(r)
    # the discriminator is untouched before its start step and trained from it on
    ckpts = {int(p.stem.split("_")[1]): torch.load(p, weights_only=True) for p in list_checkpoints(out)}
    assert sorted(ckpts) == [1, 2, 3, 4]
    same = [torch.equal(ckpts[1]["disc"][k], ckpts[2]["disc"][k]) for k in ckpts[1]["disc"]]
    changed = [not torch.equal(ckpts[2]["disc"][k], ckpts[3]["disc"][k]) for k in ckpts[2]["disc"]]
    assert all(same) and any(changed)
    assert not ckpts[2]["disc_opt"]["state"] and ckpts[3]["disc_opt"]["state"]
    # run folder: config, validation (before the first and after the last step), a sample, exported weights
    assert json.loads((out / "train_config.json").read_text())["gan_start_step"] == 2
    assert [r["step"] for r in read_metrics(out, "val")] == [0, 4]
    assert {"psnr_recon", "pred_psnr", "copy_psnr"} <= set(read_metrics(out, "val")[-1])
    assert (out / "samples" / "step_0000004.mp4").stat().st_size > 0
    exported = VideoVAE.from_pretrained(out / "weights")
    assert torch.equal(exported.padding_token, ckpts[4]["model"]["padding_token"])
    assert "Validation at step 4" in (out / "weights" / "README.md").read_text()


def test_finetune_decoder_leaves_the_encoder_bit_identical(tmp_path):
    init = VideoVAE.from_preset("tiny")
    with torch.no_grad():
        init.padding_token.normal_()
    init.save_pretrained(tmp_path / "init")
    cfg = tiny_train_config("decoder", preset=None, init=str(tmp_path / "init"), steps=3)
    assert cfg.drop_ratio == 0 and cfg.gan_start_step == 0
    train(cfg, tmp_path / "ft", quiet=True)
    tuned = VideoVAE.from_pretrained(tmp_path / "ft" / "weights")
    before, after = init.state_dict(), tuned.state_dict()
    for name in before:
        if name.startswith("encoder.") or name == "padding_token":
            assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))
    lines = read_metrics(tmp_path / "ft")
    assert all(r["dropped"] == 0 and "gan" in r and "kl" not in r for r in lines)


def test_sigterm_to_every_process_of_the_job_stops_cleanly(tmp_path):
    """A scheduler's SIGTERM reaches the DataLoader workers too (here a little before the main process, as the
    order is not defined): the workers keep serving, and the run stops with a checkpoint."""
    import multiprocessing

    def interrupt(step):
        if step == 2:
            for child in multiprocessing.active_children():  # the DataLoader's worker processes
                os.kill(child.pid, signal.SIGTERM)
        if step == 5:  # after the batches the workers had prefetched are used up
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(tiny_train_config(steps=8, workers=1), tmp_path / "r", quiet=True, on_step=interrupt)
    assert result.status == "interrupted" and result.step == 5
    assert [p.name for p in list_checkpoints(tmp_path / "r")][-1] == "step_0000005.pt"


def test_interrupted_decoder_run_names_the_command_that_resumes_it(tmp_path, capsys):
    VideoVAE.from_preset("tiny").save_pretrained(tmp_path / "init")
    cfg = tiny_train_config("decoder", preset=None, init=str(tmp_path / "init"), steps=4)
    result = train(cfg, tmp_path / "ft", on_step=lambda s: s == 1 and os.kill(os.getpid(), signal.SIGTERM))
    assert result.status == "interrupted"
    assert f"continue with: pvvae finetune-decoder --resume {tmp_path / 'ft'}" in capsys.readouterr().err


def test_resume_after_sigterm_equals_uninterrupted(tmp_path):
    cfg = tiny_train_config(steps=6, gan_start_step=2, ema_decay=0.9, ckpt_every=2, val_every=4, padding="gaussian")
    full = train(cfg, tmp_path / "a", quiet=True)

    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(cfg, tmp_path / "b", quiet=True, on_step=interrupt)
    # the kill landed mid-run: stopped after update 3 of 6, nothing logged or exported past it
    assert first.status == "interrupted" and first.step == 3 < cfg.steps
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [0, 1, 2]
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_0000002.pt", "step_0000003.pt"]
    assert not (tmp_path / "b" / "weights").exists()
    resumed_steps = []
    second = train(cfg, tmp_path / "b", resume=True, quiet=True, on_step=resumed_steps.append)
    assert second.status == "finished" and second.step == 6
    # it resumed: started at the checkpoint's step and made only the remaining updates
    assert second.start_step == 3 and resumed_steps == [4, 5, 6]

    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(6))  # one uninterrupted-looking log
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "mse", "motion", "kl", "gan", "d_loss", "dropped", "lr", "grad_norm"):
            assert ra.get(key) == rb.get(key), (ra["step"], key, ra.get(key), rb.get(key))
    assert read_metrics(tmp_path / "a", "val") == read_metrics(tmp_path / "b", "val")
    assert full.rank_weight_hashes == second.rank_weight_hashes


def test_rng_state_round_trip_and_a_changed_number_of_processes():
    k_rng, noise = random.Random(1), torch.Generator().manual_seed(2)
    generators = {"k_rng": k_rng, "noise": noise}
    saved = rng_state(generators)
    draws = (random.random(), k_rng.random(), torch.rand(3, generator=noise), torch.rand(3))
    restore_rng([saved], 0, 1, generators)
    again = (random.random(), k_rng.random(), torch.rand(3, generator=noise), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2]) and torch.equal(draws[3], again[3])
    # written by 2 processes, resumed by 1: only the shared stream continues, with a warning
    warnings = []
    restore_rng([saved, saved], 0, 1, generators, shared=("k_rng",), warn=warnings.append)
    assert k_rng.random() == draws[1] and "2 processes, now 1" in warnings[0]


def test_frame_rule_of_init_weights_is_checked_before_anything_is_written(tmp_path):
    VideoVAE.from_preset("tiny").save_pretrained(tmp_path / "w")
    cfg = tiny_train_config(preset=None, init=str(tmp_path / "w"), frames=6)  # the factor is known once loaded
    with pytest.raises(ConfigError, match="frames must be 1 \\+ 4k"):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_config_file_and_flag_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "tiny"\ndata = ["synthetic:digits"]\nsteps = 50\nlr = 2e-4\nmotion-weight = 0.5\n')
    cfg = build_config("video", toml, steps=7)
    assert (cfg.steps, cfg.lr, cfg.motion_weight, cfg.data) == (7, 2e-4, 0.5, ("synthetic:digits",))
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"preset": "tiny", "data": "synthetic:mix", "gan_weight": 0.0}))
    assert build_config("image", js).frames == 1 and build_config("image", js).gan_weight == 0.0
    assert build_config("decoder", init="w", data=["synthetic:mix"]).gan_start_step == 0
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match="bad.toml: unknown key"):
        build_config("video", tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="frames must be 1 \\+ 4k"):
        build_config("video", toml, frames=16)
    with pytest.raises(ConfigError, match="must be 1 for --stage image"):
        build_config("image", toml, frames=17)
    with pytest.raises(ConfigError, match="must be 0 for finetune-decoder"):
        build_config("decoder", init="w", data=["synthetic:mix"], max_drop_ratio=0.5)


def test_cli_image_then_video_stage_with_config_and_resume_rules(tmp_path):
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text("size = 32\nbatch-size = 1\nworkers = 0\nval-clips = 1\nlr = 1e-3\n")
    image = tmp_path / "image"
    r = runner.invoke(app, ["train", "--stage", "image", "--config", str(cfg_file), "--preset", "tiny",
                            "--data", "synthetic:shapes", "--steps", "2", "--out", str(image), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "finished 2 steps" in r.output
    saved = json.loads((image / "train_config.json").read_text())
    assert (saved["stage"], saved["frames"], saved["size"], saved["steps"]) == ("image", 1, 32, 2)
    assert (image / "samples" / "step_0000002.png").exists()  # single frames: a png sample
    # the next stage starts from the run folder (its exported weights)
    video = tmp_path / "video"
    r = runner.invoke(app, ["train", "--config", str(cfg_file), "--init", str(image), "--data", "synthetic:shapes",
                            "--frames", "5", "--steps", "1", "--out", str(video), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((video / "train_config.json").read_text())["init"] == str(image.resolve())
    # resume may extend the run but not change what it computes
    r = runner.invoke(app, ["train", "--resume", str(video), "--lr", "0.1"])
    assert r.exit_code == 2 and "drop --lr" in r.output
    r = runner.invoke(app, ["finetune-decoder", "--resume", str(video)])
    assert r.exit_code == 2 and "resume it with `pvvae train --resume" in r.output
    r = runner.invoke(app, ["train", "--resume", str(video), "--steps", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert [x["step"] for x in read_metrics(video)] == [0, 1]
    # an existing run is never overwritten
    r = runner.invoke(app, ["train", "--config", str(cfg_file), "--preset", "tiny", "--data", "synthetic:shapes",
                            "--out", str(video)])
    assert r.exit_code == 2 and "already holds a run" in r.output


@pytest.mark.parametrize(
    "setup, message",
    [("missing", "no such data folder"), ("empty", "no video files found"), ("images", "but no videos")],
)
def test_cli_bad_data_folder_errors(tmp_path, setup, message):
    import numpy as np

    from pvvae_cli.media.writer import write_video

    folder = tmp_path / "data"
    if setup != "missing":
        folder.mkdir()
    if setup == "images":
        write_video(folder / "a.png", np.zeros((1, 16, 16, 3), np.uint8), 0)
    r = runner.invoke(app, ["train", "--preset", "tiny", "--data", str(folder), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and str(folder) in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_needs_weights_and_output(tmp_path):
    r = runner.invoke(app, ["train", "--data", "synthetic:mix", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "give --preset NAME" in r.output
    r = runner.invoke(app, ["finetune-decoder", "--data", "synthetic:mix", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "finetune-decoder needs --init" in r.output
    r = runner.invoke(app, ["train", "--preset", "tiny", "--data", "synthetic:mix"])
    assert r.exit_code == 2 and "give --out" in r.output


def test_lr_defaults_to_the_presets_and_is_saved_resolved(tmp_path):
    """Without --lr the run uses the preset's rate (``DEFAULT_LR``), from --init weights too (their config keeps
    the preset name), and train_config.json records the rate used, so a resumed run uses the same one."""
    from pvvae_cli.train.config import DEFAULT_LR

    cfg = tiny_train_config(lr=None, steps=1)
    assert cfg.lr is None
    train(cfg, tmp_path / "a", quiet=True)
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert saved["lr"] == DEFAULT_LR["tiny"]
    first = read_metrics(tmp_path / "a")
    assert [r["lr"] for r in first if r["kind"] == "train"][0] > 0
    cfg2 = tiny_train_config(lr=None, steps=1, preset=None, init=str(tmp_path / "a" / "weights"))
    train(cfg2, tmp_path / "b", quiet=True)
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["lr"] == DEFAULT_LR["tiny"]


@requires_cpu_bf16
def test_auto_precision_is_measured_on_the_cpu(monkeypatch):
    """``--precision auto`` on the CPU takes bf16 only where the probe measures it clearly faster than fp32."""
    import torch

    from pvvae_cli.runtime import device as dev

    cpu = torch.device("cpu")
    assert dev.cpu_bf16_speedup() > 0
    for speedup, expected in ((0.7, torch.float32), (1.1, torch.float32), (1.9, torch.bfloat16)):
        monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda threads=None, s=speedup: s)
        assert dev.resolve_training_dtype("auto", cpu) == expected
    assert dev.resolve_training_dtype("fp32", cpu) == torch.float32
    assert dev.resolve_training_dtype("bf16", cpu) == torch.bfloat16
