"""Time the metric networks add per clip: ST-LPIPS (alex) and the Kinetics-400 I3D, on the eval protocol's clips.

    pvvae setup-metrics                                  # once: the converted networks
    python benchmarks/bench_metric_networks.py           # 17 frames at 256x256, CPU (CUDA when available)
    python benchmarks/bench_metric_networks.py --frames 17 --size 128 --device cpu --repeats 3

What is measured, on random pixels (time does not depend on the values): ``STLPIPSMetric`` on one clip pair
``(1, 3, T, S, S)`` (every frame of both clips through the trunk, the way ``eval`` scores a reconstruction), and
``I3DFeatures`` on one uint8 clip (resize to 224x224 + forward; ``eval`` runs it once per original clip and once
per model's reconstruction). Best of ``--repeats`` after one warm-up, with the thread count and CPU model
printed: compare only numbers from one run. Besides wall time, the CPU seconds the process used (all threads):
on a shared machine wall time grows with the other load, CPU time much less.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pvvae_cli.metrics import STLPIPSMetric, load_i3d
from pvvae_cli.runtime.device import resolve_device


def best_time(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best (wall seconds, process CPU seconds) of ``repeats`` calls after one warm-up."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(times)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({where}); clip: {args.frames} frames at {args.size}x{args.size}")

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, args.frames, args.size, args.size, generator=gen) * 2 - 1
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    stlpips = STLPIPSMetric(device=device)
    t, cpu = best_time(lambda: stlpips(x, y), args.repeats, device)
    print(f"ST-LPIPS (alex): {t:.3f} s per clip pair ({1000 * t / args.frames:.1f} ms per frame pair), "
          f"CPU {cpu:.3f} s")

    i3d = load_i3d(device=device)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    t, cpu = best_time(lambda: i3d(u8), args.repeats, device)
    print(f"I3D (Kinetics-400): {t:.3f} s per clip (resize to 224x224 + forward), CPU {cpu:.3f} s")


if __name__ == "__main__":
    main()
