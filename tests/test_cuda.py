"""CUDA checks (issue 27): one bf16 training step per stage, CPU-fp32 vs CUDA-strict-fp32 encode/decode parity, a
CPU-made checkpoint resumed on CUDA, the CLI on CUDA, and 2-process nccl DDP. Every test is marked ``cuda``:
tests/conftest.py skips them where CUDA is not available. ``benchmarks/gpu_smoke.sh`` runs the same paths through
the CLI at full size, with timings and peak memory."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_clip, read_metrics, run_pvvae, tiny_train_config

from pvvae_cli.runtime.device import apply_precision_policy
from pvvae_cli.train.trainer import train

pytestmark = pytest.mark.cuda

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "pvvae-small"

# CPU fp32 vs CUDA fp32 without TF32: the same arithmetic, summed in another order by other kernels. On the tiny
# model (unit-scale activations) that moves outputs by ~1e-6; 1e-4 of the output's scale leaves room for cuDNN's
# algorithm choice while still catching TF32 (~1e-3 relative) or a wrong kernel.
PARITY_RTOL = 1e-4


@pytest.fixture(autouse=True)
def _restore_precision_policy():
    """``apply_precision_policy`` (called by every training run) sets process-wide flags: give them back."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, precision,
     torch.backends.cudnn.benchmark) = saved
    torch.set_float32_matmul_precision(precision)


def _runtime(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir, "runtime")


@pytest.mark.parametrize("stage", ["image", "video", "decoder"])
def test_one_bf16_training_step_per_stage(tmp_path, stage):
    """Two updates (the second after cuDNN's algorithm search) in bf16 autocast on CUDA, the discriminator on from
    step 0, finite losses, the peak memory logged, exported weights finite."""
    cfg = tiny_train_config(stage, device="cuda", precision="bf16", steps=2, gan_start_step=0,
                            frames=1 if stage == "image" else 5)
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.status == "finished" and result.step == 2
    runtime = _runtime(tmp_path / "run")[0]
    assert runtime["device"].startswith("cuda") and runtime["dtype"] == "bfloat16"
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        assert torch.isfinite(torch.tensor([r["loss"], r["d_loss"]])).all(), r
        assert r["max_mem_gb"] > 0
    from pvvae_cli import VideoVAE

    weights = VideoVAE.from_pretrained(result.weights_dir).state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@torch.no_grad()
def test_encode_decode_cpu_fp32_matches_cuda_strict_fp32(tiny):
    """The scrambled tiny model (every tap random) in fp32 on the CPU and on CUDA with TF32 off: posterior moments
    and the decoded pixels agree within ``PARITY_RTOL`` of their scale. The decoder gets the CPU's latents, so its
    check does not inherit the encoder's difference."""
    policy = apply_precision_policy(torch.device("cuda"), strict_fp32=True)
    assert policy["tf32"] is False and torch.get_float32_matmul_precision() == "highest"
    x = random_clip(2, 3, 9, 32, 32)
    post = tiny.encode(x)
    y = tiny.decode(post.mean)
    gpu = copy.deepcopy(tiny).cuda()
    post_gpu = gpu.encode(x.cuda())
    y_gpu = gpu.decode(post.mean.cuda())
    for name, ref, got in (("mean", post.mean, post_gpu.mean), ("logvar", post.logvar, post_gpu.logvar),
                           ("pixels", y, y_gpu)):
        assert got.dtype == torch.float32
        diff = (got.cpu() - ref).abs().max().item()
        scale = max(1.0, ref.abs().max().item())
        assert diff <= PARITY_RTOL * scale, f"{name}: max abs difference {diff:.3e} (scale {scale:.2f})"


@torch.no_grad()
def test_bf16_autocast_on_cuda_stays_close_to_fp32(tiny):
    """bf16 autocast (what --dtype auto gives on CUDA) keeps the reconstruction of the tiny model near fp32's: bf16
    has 8 mantissa bits, so the check is 5e-2 of the output scale, not bitwise."""
    apply_precision_policy(torch.device("cuda"), strict_fp32=True)
    gpu = copy.deepcopy(tiny).cuda()
    x = random_clip(2, 3, 9, 32, 32).cuda()
    ref = gpu.decode(gpu.encode(x).mean)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = gpu.decode(gpu.encode(x).mean)
    assert torch.isfinite(got).all()
    assert (got.float() - ref).abs().max().item() <= 5e-2 * max(1.0, ref.abs().max().item())


def test_cpu_checkpoint_resumes_on_cuda(tmp_path):
    """The audit's X4 and X5 on real hardware: a run made on the CPU (EMA on) continues on CUDA. The EMA shadows
    must follow the parameters to the GPU, and the CPU posterior-noise generator's state does not fit a CUDA
    generator: it is reseeded with a warning, and the run goes on."""
    out = tmp_path / "run"
    cfg = tiny_train_config(steps=2, ema_decay=0.9, ckpt_every=1, device="cpu")
    assert train(cfg, out, quiet=True).status == "finished"
    warnings: list[str] = []
    result = train(cfg.replace(steps=4, device="cuda"), out, resume=True, quiet=True, log=warnings.append)
    assert result.status == "finished" and result.step == 4 and result.start_step == 2
    assert any("'noise' was saved on another kind of device" in w for w in warnings), warnings
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2, 3]
    assert _runtime(out)[-1]["device"].startswith("cuda")
    from pvvae_cli import VideoVAE

    weights = VideoVAE.from_pretrained(result.weights_dir).state_dict()  # the EMA weights
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_cli_encode_decode_on_cuda(tmp_path):
    """The console command on CUDA with its defaults (bf16): a clip through encode and decode, frame count and size
    kept (the CLI tests elsewhere pin the CPU)."""
    from conftest import moving_square

    from pvvae_cli.media.video_io import read_clip
    from pvvae_cli.media.writer import write_video

    write_video(tmp_path / "clip.mp4", moving_square(9, 32), fps=8.0)
    enc = run_pvvae("encode", tmp_path / "clip.mp4", "-o", tmp_path / "lat", "--model", "preset:tiny", "--device",
                    "cuda", "-q")
    assert enc.returncode == 0, enc.stderr
    dec = run_pvvae("decode", tmp_path / "lat", "-o", tmp_path / "rec", "--device", "cuda", "-q")
    assert dec.returncode == 0, dec.stderr
    frames, _ = read_clip(tmp_path / "rec" / "clip.mp4")
    assert frames.shape == (9, 32, 32, 3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="2-process nccl DDP needs 2 GPUs")
@pytest.mark.parametrize("stage,start", [("image", ["--init", str(SHIPPED)]), ("video", ["--preset", "tiny"])],
                         ids=["image-shipped", "video-tiny"])
def test_torchrun_two_gpus_nccl(tmp_path, stage, start):
    """2 processes, one GPU each, nccl: the image stage of the shipped model (the audit's X2: unused parameters at
    T = 1) and the video stage; both replicas end with the same weights."""
    out = tmp_path / "run"
    frames = [] if stage == "image" else ["--frames", "5"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pvvae_cli",
           "train", "--stage", stage, *start, *frames, "--data", "synthetic:mix", "--size", "32", "--batch-size", "1",
           "--steps", "3", "--workers", "0", "--val-clips", "1", "--gan-start-step", "1", "--log-every", "1",
           "--device", "cuda", "--precision", "bf16", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runtime = _runtime(out)[0]
    assert runtime["world"] == 2 and runtime["device"].startswith("cuda")
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "final"]
    hashes = final[0]["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
