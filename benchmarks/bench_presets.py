"""Parameter count and CPU time of one encode + decode per preset (issue: model core).

Usage: python benchmarks/bench_presets.py [--presets tiny small base] [--sizes 64 256] [--frames 17]
       [--dtype fp32|bf16] [--repeats 1]

Prints one row per (preset, size): parameters, encode seconds, decode seconds, total. Random weights
(timing only). Each measurement is preceded by one untimed warm-up at the same shape.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from pvvae_cli import PRESETS, VideoVAE
from pvvae_cli.runtime.device import autocast, resolve_device, resolve_dtype


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "base"], choices=sorted(PRESETS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats (the minimum is reported)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up run (for the big preset/size)")
    args = ap.parse_args()

    device = resolve_device("cpu")
    dtype = resolve_dtype(args.dtype, device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}, "
          f"{args.frames} frames, batch 1, best of {args.repeats}")
    print("| preset | params | input | encode s | decode s | encode+decode s |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        torch.manual_seed(0)
        vae = VideoVAE.from_preset(name).eval()
        for size in args.sizes:
            x = torch.rand(1, 3, args.frames, size, size) * 2 - 1
            with torch.no_grad(), autocast(device, dtype):
                z = vae.encode(x).mode()
                if not args.no_warmup:
                    vae.decode(z)
                t_enc = timed(partial(vae.encode, x), args.repeats)
                t_dec = timed(partial(vae.decode, z), args.repeats)
            print(f"| {name} | {vae.num_parameters():,} | {args.frames}x{size}x{size} | {t_enc:.3f} | {t_dec:.3f} "
                  f"| {t_enc + t_dec:.3f} |", flush=True)


if __name__ == "__main__":
    main()
