"""``gen``: the Latte-style DiT, the rectified flow, the Euler/CFG sampler, the latent data, save/load, resume, CLI."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from conftest import metric_network, read_metrics, requires_cpu_bf16, run_pvvae
from gen_helpers import SHAPE, write_latent_set

from pvvae_cli.engine.checkpoints import list_checkpoints
from pvvae_cli.gen import flow
from pvvae_cli.gen.config import PRESETS, GenConfig
from pvvae_cli.gen.data import GenDataError, load_latent_set
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.sampler import euler_sample, initial_noise, time_grid
from pvvae_cli.gen.train_config import GenTrainConfig
from pvvae_cli.gen.trainer import train_gen
from pvvae_cli.gen.weights import load_gen, save_gen


def tiny(**fields) -> LatteDiT:
    base = dict(latent_channels=SHAPE[0], latent_frames=SHAPE[1], latent_height=SHAPE[2], latent_width=SHAPE[3])
    return LatteDiT.from_preset("tiny", **{**base, **fields})


def scrambled(model: LatteDiT) -> LatteDiT:
    """Every weight random (the zero-initialised layers too), so the tests exercise every path."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("patch,shape", [(1, (2, 8, 3, 4, 6)), (2, (2, 8, 5, 4, 10)), (1, (1, 8, 1, 3, 7))])
def test_shapes_on_non_square_latents(patch, shape, one_thread):
    model = scrambled(tiny(patch_size=patch, num_classes=3))
    x = torch.randn(shape)
    v = model(x, torch.rand(shape[0]), torch.tensor([0, 3])[: shape[0]])
    assert v.shape == x.shape and v.dtype == torch.float32 and torch.isfinite(v).all()
    # row-major grid: transposing the input is not the same as transposing the output (non-square grids differ)
    assert v.abs().mean() > 0


def test_non_square_positions_are_distinct():
    from pvvae_cli.gen.model import sincos_2d

    emb = sincos_2d(64, 3, 5)  # (15, 64)
    assert emb.shape == (15, 64)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 1e-3  # every grid cell gets its own embedding


def test_adaln_zero_init_gives_zero_velocity(one_thread):
    model = tiny(num_classes=2)
    v = model(torch.randn(2, *SHAPE), torch.rand(2), torch.tensor([0, 2]))
    assert torch.equal(v, torch.zeros_like(v))
    for block in model.blocks:  # every block starts as the identity
        assert block.adaLN_modulation[-1].weight.abs().sum() == 0


def test_bad_input_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="expected latents"):
        model(torch.randn(1, 3, 2, 4, 6), torch.rand(1))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny(patch_size=2)(torch.randn(1, 8, 2, 4, 5), torch.rand(1))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, *SHAPE), torch.rand(1), torch.tensor([0]))
    with pytest.raises(ValueError, match="depth must be even"):
        GenConfig(depth=3)


def test_time_embedding_stays_fp32_under_bf16_autocast():
    emb = tiny().t_embedder
    t = torch.tensor([0.9984, 1.0])
    plain = emb(t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = emb(t)
    assert auto.dtype == torch.float32 and torch.equal(auto, plain)
    # the reason: in bf16, 0.9984 * 1000 = 998.4 rounds to 1000 and the two times would collide
    assert (torch.tensor(998.4).bfloat16().float() == 1000.0) and not torch.equal(auto[0], auto[1])


def test_presets_are_latte_sizes():
    sizes = {k: (c.depth, c.hidden_size, c.num_heads) for k, c in PRESETS.items()}
    assert sizes["S"] == (12, 384, 6) and sizes["B"] == (12, 768, 12)
    assert sizes["L"] == (24, 1024, 16) and sizes["XL"] == (28, 1152, 16)


# ------------------------------------------------------------------------------------------------ flow
def test_flow_orientation_t0_is_data_t1_is_noise():
    x0, eps = torch.randn(3, 2, 1, 2, 2), torch.randn(3, 2, 1, 2, 2)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(3)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.ones(3)), eps)
    t, h = torch.full((3,), 0.3), 1e-3
    slope = (flow.interpolate(x0, eps, t + h) - flow.interpolate(x0, eps, t)) / h
    assert torch.allclose(slope, flow.velocity_target(x0, eps), atol=1e-2)  # the target is dx_t/dt = eps - x0


def test_time_distribution_and_shift():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_time(20000, g)
    assert 0 < t.min() and t.max() < 1 and abs(t.median() - 0.5) < 0.02  # logit-normal(0, 1): median 0.5
    shifted = flow.shift_time(t, 3.0)
    assert (shifted >= t).all() and abs(shifted.median() - 0.75) < 0.02  # s t / (1 + (s-1) t) at 0.5 = 0.75
    assert torch.equal(flow.shift_time(t, 1.0), t)


def test_loss_by_t_bin_counts_every_sample():
    bins = flow.loss_by_t_bin(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.05, 0.95, 0.99]))
    got = {k: float(v) for k, v in bins.items()}
    assert (got["loss_t0_sum"], got["loss_t0_n"]) == (1.0, 1) and (got["loss_t9_sum"], got["loss_t9_n"]) == (5.0, 2)
    assert (got["loss_t5_sum"], got["loss_t5_n"]) == (0.0, 0)
    means = flow.t_bin_means({"loss": 2.0, **got})
    assert means == {"loss": 2.0, "loss_t0": 1.0, "loss_t9": 2.5}  # empty bins are left out


# ------------------------------------------------------------------------------------------------ sampler
def test_euler_integrates_a_constant_field_exactly():
    c = torch.randn(2, 3, 1, 2, 2)
    noise = torch.randn(2, 3, 1, 2, 2)
    out = euler_sample(lambda x, t, y: c.expand_as(x), noise, steps=7)
    assert torch.allclose(out, noise - c, atol=1e-6)  # x_0 = x_1 - integral_0^1 v dt
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_euler_with_the_exact_gaussian_field_recovers_mean_and_variance():
    # data x0 ~ N(mu, sigma^2), eps ~ N(0, 1): x_t is Gaussian with mean m_t = (1-t) mu and variance
    # s_t^2 = (1-t)^2 sigma^2 + t^2, and E[eps - x0 | x_t] = -mu + (t - (1-t) sigma^2) / s_t^2 (x_t - m_t).
    mu, sigma = 1.5, 0.5

    def exact(x, t, y):
        t = t.view(-1, *[1] * (x.ndim - 1))
        var = (1 - t) ** 2 * sigma**2 + t**2
        return -mu + (t - (1 - t) * sigma**2) / var * (x - (1 - t) * mu)

    noise = initial_noise((4000, 1, 1, 2, 2), seed=0)
    out = euler_sample(exact, noise, steps=200)
    assert abs(out.mean() - mu) < 0.02 and abs(out.std() - sigma) < 0.02
    # the flow maps each noise value to mu + sigma * noise (the Gaussian's quantile map); Euler is first order:
    # twice the steps, half the error
    err = (out - (mu + sigma * noise)).abs().max()
    err2 = (euler_sample(exact, noise, steps=400) - (mu + sigma * noise)).abs().max()
    assert err < 0.02 and 0.4 < err2 / err < 0.6


def test_cfg_scale_one_is_the_conditional_model_and_the_formula(one_thread):
    model = scrambled(tiny(num_classes=2)).eval()
    noise, y = initial_noise((2, *SHAPE), 0), torch.tensor([0, 1])
    plain = euler_sample(model, noise, 4, y, cfg_scale=1.0, null_class=2)
    assert torch.allclose(euler_sample(model, noise, 4, y, 1.0, 2), plain)
    unconditional = euler_sample(model, noise, 4, torch.tensor([2, 2]), 1.0, 2)
    assert torch.allclose(euler_sample(model, noise, 4, y, cfg_scale=0.0, null_class=2), unconditional, atol=1e-5)
    # one step by hand: v_u + w (v_c - v_u)
    t = torch.ones(2)
    v_c, v_u = model(noise, t, y), model(noise, t, torch.tensor([2, 2]))
    guided = euler_sample(model, noise, 1, y, cfg_scale=4.0, null_class=2)
    assert torch.allclose(guided, noise - (v_u + 4.0 * (v_c - v_u)), atol=1e-5)
    assert not torch.allclose(guided, euler_sample(model, noise, 1, y, 1.0, 2))


def test_same_seed_same_samples(one_thread):
    from pvvae_cli.gen.generate import sample_latents

    model = scrambled(tiny(latents_mean=(0.5,) * 8, latents_std=(2.0,) * 8)).eval()
    a, _ = sample_latents(model, 2, steps=3, seed=7)
    b, _ = sample_latents(model, 2, steps=3, seed=7)
    c, _ = sample_latents(model, 2, steps=3, seed=8)
    assert torch.equal(a, b) and not torch.allclose(a, c)


# ------------------------------------------------------------------------------------------------ weights, data
def test_save_load_round_trip(tmp_path, one_thread):
    model = scrambled(tiny(num_classes=2, class_names=("left", "right"), latents_mean=(0.1,) * 8,
                           latents_std=(1.5,) * 8, vae="preset:tiny", fps=8.0)).eval()
    save_gen(model, tmp_path / "w", model_card="# card\n")
    loaded = load_gen(tmp_path / "w")
    assert loaded.config == model.config
    x, t, y = torch.randn(2, *SHAPE), torch.rand(2), torch.tensor([0, 1])
    assert torch.equal(loaded(x, t, y), model(x, t, y))
    assert json.loads((tmp_path / "w" / "config.json").read_text())["class_name"] == "LatteDiT"
    (tmp_path / "w" / "config.json").write_text(json.dumps({"class_name": "VideoVAE", "format_version": 1}))
    from pvvae_cli.models.weights import WeightsError

    with pytest.raises(WeightsError, match="not a gen model"):
        load_gen(tmp_path / "w")


def test_latent_set_labels_and_odd_files(tmp_path):
    files = write_latent_set(tmp_path / "lat", per_class=2)
    data = load_latent_set(tmp_path / "lat", class_from_folders=True)
    assert len(data) == 4 and data.shape == SHAPE and data.class_names == ("left", "right")
    assert data.labels.tolist() == [0, 0, 1, 1]  # left/ sorts first
    mean, std = data.channel_stats()
    assert len(mean) == SHAPE[0] and all(s > 0 for s in std)
    # a CSV of labels, and a manifest as the input list
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(
        f"{f.relative_to(tmp_path / 'lat').as_posix()},{'b' if 'right' in f.name or 'right' in str(f) else 'a'}\n"
        for f in files))
    assert load_latent_set(tmp_path / "lat", labels_csv=tmp_path / "labels.csv").labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "bad.csv").write_bytes(b"\x9f\x00binary")
    with pytest.raises(GenDataError, match=r"bad\.csv: cannot read the labels file"):
        load_latent_set(tmp_path / "lat", labels_csv=tmp_path / "bad.csv")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"output": str(f)}) + "\n" for f in files[:3]))
    assert len(load_latent_set(tmp_path / "m.jsonl")) == 3
    # one file of another shape: named in the error
    from pvvae_cli.codec.latents import load_latent, save_latent

    z, meta = load_latent(files[0])
    save_latent(tmp_path / "lat" / "right" / "odd.safetensors", z[:, :2], meta.replace(num_frames=5, encoded_frames=5))
    with pytest.raises(GenDataError, match=r"odd\.safetensors: latent shape \(8, 2, 4, 6\) differs"):
        load_latent_set(tmp_path / "lat")
    save_latent(tmp_path / "lat" / "right" / "odd.safetensors", z, meta.replace(config_hash="0" * 16))
    with pytest.raises(GenDataError, match=r"odd\.safetensors: config_hash .* same VAE"):
        load_latent_set(tmp_path / "lat")


def test_batches_are_a_pure_function_of_position(tmp_path):
    write_latent_set(tmp_path / "lat", per_class=3)
    data = load_latent_set(tmp_path / "lat")
    stream = data.indices(0, 12, seed=1)
    assert torch.equal(torch.cat([data.indices(0, 5, seed=1), data.indices(5, 7, seed=1)]), stream)
    assert sorted(stream[:6].tolist()) == list(range(6))  # each epoch is a permutation
    two = [data.indices(0, 6, seed=1, rank=r, world=2) for r in range(2)]  # DDP ranks interleave the stream
    assert torch.equal(torch.stack(two, 1).flatten(), stream)


# ------------------------------------------------------------------------------------------------ training
def _cfg(root, **changes) -> GenTrainConfig:
    return GenTrainConfig(**{**dict(data=str(root), class_from_folders=True, preset="tiny", steps=6, batch_size=4,
                                    lr=1e-3, log_every=1, ckpt_every=2, device="cpu"), **changes})


def test_resume_after_sigterm_equals_uninterrupted(tmp_path, one_thread):
    write_latent_set(tmp_path / "lat", per_class=2)
    cfg = _cfg(tmp_path / "lat", ema_decay=0.9)
    full = train_gen(cfg, tmp_path / "a", quiet=True)

    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_gen(cfg, tmp_path / "b", quiet=True, on_step=interrupt)
    assert first.status == "interrupted" and first.step == 3
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_0000002.pt", "step_0000003.pt"]
    second = train_gen(cfg, tmp_path / "b", resume=True, quiet=True)
    assert second.status == "finished" and second.start_step == 3 and second.step == 6
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(6))
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == rb["loss"] and ra["grad_norm"] == rb["grad_norm"], ra["step"]
    wa, wb = load_gen(tmp_path / "a"), load_gen(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(wa.state_dict().values(), wb.state_dict().values(), strict=True))
    assert full.weights_dir is not None


@requires_cpu_bf16
def test_bf16_training_runs_and_logs_t_bins(tmp_path, one_thread):
    write_latent_set(tmp_path / "lat", per_class=2)
    result = train_gen(_cfg(tmp_path / "lat", precision="bf16", steps=3), tmp_path / "run", quiet=True)
    rec = read_metrics(tmp_path / "run")[-1]
    assert result.status == "finished" and torch.isfinite(torch.tensor(rec["loss"]))
    assert any(k.startswith("loss_t") for k in rec)
    card = (tmp_path / "run" / "weights" / "README.md").read_text()
    assert "rectified flow" in card and "left, right" in card


# ------------------------------------------------------------------------------------------------ does it learn?
def test_tiny_gen_learns_a_tiny_latent_set(tmp_path, one_thread):
    """The check shape tests cannot make: trained for a fixed 300 steps on 4 clips (blobs moving left or right),
    the flow loss falls far below the best input-blind predictor (the mean velocity), and samples land much
    nearer the training latents than the noise they start from. Measured (README, "gen: does it learn?"):
    loss 0.41 vs baseline 1.77; nearest-neighbour distance 1.07 vs 1.39 for the noise."""
    from pvvae_cli.gen.data import normalize
    from pvvae_cli.gen.evaluation import flow_losses, sample_statistics

    write_latent_set(tmp_path / "lat", per_class=2)
    cfg = _cfg(tmp_path / "lat", steps=300, batch_size=8, log_every=50, ckpt_every=1000, time_shift=3.0)
    train_gen(cfg, tmp_path / "run", quiet=True)
    model = load_gen(tmp_path / "run")
    data = load_latent_set(tmp_path / "lat", class_from_folders=True)
    x = normalize(data.latents, model.config)
    losses = flow_losses(model, x, data.labels, seed=1)
    assert losses["loss"] < 0.5 * losses["mean_velocity_loss"], losses
    stats = sample_statistics(model, x, data.labels, num=16, steps=25, seed=1)
    assert stats["nn_dist"] < 0.9 * stats["noise_nn_dist"], stats
    # the same measures reject a model that learned nothing (zero velocity: samples are the noise)
    untrained = LatteDiT(model.config)
    assert flow_losses(untrained, x, data.labels, seed=1)["loss"] > 0.9 * losses["mean_velocity_loss"]
    assert sample_statistics(untrained, x, data.labels, 16, 25, 1)["nn_dist"] == pytest.approx(
        stats["noise_nn_dist"])


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_encode_gen_train_gen_sample(tmp_path):
    """End to end through the installed command: encode labelled clips with preset:tiny (RANDOM weights: this
    checks the pipeline, not quality), train a tiny gen model on them with periodic evaluation (latent distances,
    and FVD/KVD through the real I3D, which ``pvvae setup-metrics`` provides; skipped without it), sample, decode
    and write the outputs."""
    import numpy as np

    from pvvae_cli.media.writer import write_video

    for name, direction in (("left", -1), ("right", 1)):
        for i in range(2):
            frames = np.full((16, 64, 96, 3), 30, dtype=np.uint8)
            for f in range(16):
                x = (16 + 24 * i + direction * 3 * f) % 80
                frames[f, 16:40, x : x + 16] = 220
            write_video(tmp_path / "clips" / name / f"c{i}.mp4", frames, fps=8)
    out = run_pvvae("encode", tmp_path / "clips", "-o", tmp_path / "lat", "--model", "preset:tiny", "--frames", "9",
                    "-q")
    assert out.returncode == 0, out.stderr
    i3d = metric_network("i3d")
    out = run_pvvae("gen", "train", tmp_path / "lat", "--out", tmp_path / "run", "--preset", "tiny",
                    "--class-from-folders", "--steps", "3", "--batch-size", "2", "--device", "cpu", "-q",
                    "--eval-every", "2", "--eval-samples", "2", "--eval-steps", "2",
                    "--eval-reference", tmp_path / "clips", "--i3d", i3d)
    assert out.returncode == 0, out.stderr
    assert "finished 3 steps" in out.stdout
    evals = read_metrics(tmp_path / "run", "eval")
    assert [r["step"] for r in evals] == [0, 2, 3]
    assert all({"fvd", "kvd", "nn_dist", "noise_nn_dist", "nn_class_acc"} <= set(r) for r in evals)
    assert (tmp_path / "run" / "eval_curve.png").is_file()  # the convergence plot (matplotlib: a test extra)
    cfg = json.loads((tmp_path / "run" / "weights" / "config.json").read_text())
    assert cfg["class_names"] == ["left", "right"] and cfg["vae"] == "preset:tiny" and cfg["encoded_frames"] == 9
    out = run_pvvae("gen", "sample", tmp_path / "run", "-o", tmp_path / "samples", "--num", "2", "--class", "right",
                    "--cfg-scale", "2", "--steps", "3", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == ["contact_sheet.png", "sample_0000.mp4", "sample_0000.safetensors", "sample_0001.mp4",
                     "sample_0001.safetensors", "samples.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "samples" / "samples.jsonl").read_text().splitlines()]
    assert [(r["video"], r["class"], r["class_name"]) for r in records] == [("sample_0000.mp4", 1, "right"),
                                                                            ("sample_0001.mp4", 1, "right")]
    from pvvae_cli.media.video_io import read_clip

    assert read_clip(tmp_path / "samples" / "sample_0000.mp4")[0].shape == (9, 64, 96, 3)
    # user errors: one line, exit code 2, before any work
    out = run_pvvae("gen", "sample", tmp_path / "run", "-o", tmp_path / "s2", "--class", "up")
    assert out.returncode == 2 and "--class up: expected a class id 0..1 or one of left, right" in out.stderr
    out = run_pvvae("gen", "train", tmp_path / "lat", "--out", tmp_path / "run", "--preset", "tiny", "-q")
    assert out.returncode == 2 and "already holds a run" in out.stderr


def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    import subprocess
    import sys

    write_latent_set(tmp_path / "lat", per_class=2)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pvvae_cli",
           "gen", "train", str(tmp_path / "lat"), "--out", str(out), "--preset", "tiny", "--class-from-folders",
           "--steps", "3", "--batch-size", "2", "--log-every", "1", "--device", "cpu", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("finished 3 steps") == 1  # one process reports
    final = read_metrics(out, "final")
    assert len(final) == 1 and len(set(final[0]["rank_weight_hashes"])) == 1 == len(final[0]["rank_weight_hashes"]) - 1
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2]


def test_eval_curve_plot(tmp_path):
    import imageio.v3 as iio

    from pvvae_cli.gen.plot import plot_eval_curves

    records = [{"kind": "eval", "step": s, "fvd": 100.0 / (1 + s), "nn_dist": 1.0 - s / 10, "noise_nn_dist": 1.2}
               for s in (0, 2, 4)] + [{"kind": "train", "step": 0, "loss": 1.0}]
    path = plot_eval_curves(records, tmp_path / "curve.png")
    image = iio.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100  # two panels side by side
    assert image.std() > 10  # not blank
    assert plot_eval_curves(records[-1:], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
