"""Speed of ``gen``: training step time and sampling time per video, with achieved GFLOP/s.

Usage: python benchmarks/bench_gen.py [--presets tiny S] [--clips 17x64x64 17x256x256] [--precisions fp32 bf16]
       [--channels 64] [--batch 4] [--sample-steps 10] [--repeats 3] [--device cpu] [--threads N]

Latents are those of a t4s16 VAE (``--channels`` 64, the paper's c64): a 17x64x64 clip is a (64, 5, 4, 4) latent,
17x256x256 a (64, 5, 16, 16) one (patch size 1). A training step is forward + backward + AdamW on ``--batch``
clips (the flow loss, class-conditional with 10 classes); sampling is ``--sample-steps`` Euler steps of one video
with classifier-free guidance (a batch of 2: conditional + null), and the time per video for the default 100 steps
is reported as 100 x the measured time per step (every step is the same forward). On the CPU the times are
process CPU time divided by the thread count (the build machine is shared: wall time there measures the other
jobs as much as ours), so the figures say what a dedicated core set would take. FLOPs are counted by
``torch.utils.flop_counter`` (matmuls and attention). Best of ``--repeats`` after one warm-up. Like the CLI, the
script first calls ``pvvae_cli.runtime.allocator.keep_freed_memory()``.
"""

from __future__ import annotations

import argparse
import time

import torch


def parse_clip(text: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def best_time(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``fn`` over ``repeats`` runs after a warm-up. On
    a shared machine the CPU time is the steadier figure: waiting for a core does not count."""
    fn()  # warm-up
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def bench(preset: str, clip: tuple[int, int, int], precision: str, channels: int, batch: int, sample_steps: int,
          repeats: int, device: torch.device) -> dict:
    from pvvae_cli.gen.flow import flow_loss
    from pvvae_cli.gen.model import LatteDiT
    from pvvae_cli.gen.sampler import euler_sample, initial_noise
    from pvvae_cli.runtime.device import DTYPES, autocast

    frames, height, width = clip
    shape = (channels, 1 + (frames - 1) // 4, height // 16, width // 16)
    torch.manual_seed(0)
    model = LatteDiT.from_preset(preset, latent_channels=shape[0], latent_frames=shape[1], latent_height=shape[2],
                                 latent_width=shape[3], num_classes=10).to(device)
    with torch.no_grad():  # random modulations: adaLN-Zero's zeros would skip no work but hide nothing either
        for p in model.parameters():
            p.normal_(0, 0.02)
    dtype = DTYPES[precision]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, *shape, device=device)
    y = torch.arange(batch, device=device) % 10
    gen = torch.Generator().manual_seed(0)

    def train_step() -> None:
        with autocast(device, dtype):
            loss = flow_loss(model, x0, y, gen, label_dropout=0.1, null_class=10).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def fwd_bwd() -> None:  # for counting: the optimiser's FLOPs are negligible
        with autocast(device, dtype):
            flow_loss(model, x0, y, gen).loss.backward()
        opt.zero_grad(set_to_none=True)

    noise = initial_noise((1, *shape), 0).to(device)

    def sample() -> None:
        model.eval()
        with autocast(device, dtype):
            euler_sample(model, noise, sample_steps, torch.tensor([3], device=device), 4.0, 10)
        model.train()

    train_flops = count_flops(fwd_bwd)
    sample_flops = count_flops(sample)
    t_train, cpu_train = best_time(train_step, repeats, device)
    t_sample, cpu_sample = best_time(sample, repeats, device)
    if device.type == "cpu":  # seconds of compute (CPU time / threads): what an idle machine would take
        t_train, t_sample = cpu_train / torch.get_num_threads(), cpu_sample / torch.get_num_threads()
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "clip": "x".join(map(str, clip)), "latent": "x".join(map(str, shape)),
            "precision": precision, "params_m": params / 1e6, "train_s": t_train,
            "train_gflops": train_flops / t_train / 1e9, "sample_step_s": t_sample / sample_steps,
            "sample_100_s": 100 * t_sample / sample_steps, "sample_gflops": sample_flops / t_sample / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "S"])
    p.add_argument("--clips", nargs="+", default=["17x64x64", "17x256x256"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from pvvae_cli.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as the CLI does
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {a.batch}; latent channels {a.channels}")
    print("| preset | clip | latent | precision | params (M) | train step s | train GFLOP/s | sample s/step | "
          "sample s/video (100 steps) | sample GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in a.presets:
        for clip in a.clips:
            for precision in a.precisions:
                r = bench(preset, parse_clip(clip), precision, a.channels, a.batch, a.sample_steps, a.repeats,
                          device)
                print(f"| {r['preset']} | {r['clip']} | {r['latent']} | {r['precision']} | {r['params_m']:.2f} | "
                      f"{r['train_s']:.4f} | {r['train_gflops']:.1f} | {r['sample_step_s']:.4f} | "
                      f"{r['sample_100_s']:.2f} | {r['sample_gflops']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
