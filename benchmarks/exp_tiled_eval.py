"""Experiment (issue 13): is a model trained on 64² crops worse at 256² because of the frame size it sees (per-frame
attention over more latent positions, zero padding at fewer borders)? Score held-out windows at SIZE whole, and cut
into independent TILE² tiles (each encoded and decoded alone, as the training crops were).

    python benchmarks/exp_tiled_eval.py WEIGHTS [--heldout data/heldout] [--size 256] [--tiles 128 64]

Before 0.7.0, on partly misread clips (CHANGELOG 0.7.0; relative figures only):
measured on run B (README "The default model"; 8 windows at 256², one thread): whole 30.39 dB, 128² tiles 30.39,
64² tiles 30.36: the frame size is not why it falls short of block PCA at 256².
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_baselines import windows  # this script's folder is on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--heldout", default="data/heldout")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tiles", nargs="+", type=int, default=[128, 64])
    ap.add_argument("--windows", type=int, default=4)
    args = ap.parse_args()

    from pvvae_cli import load_model
    from pvvae_cli.metrics.image import psnr_frames

    vae = load_model(args.weights).eval()
    held = windows(args.heldout, 17, args.windows, args.size)

    def reconstruct(x: torch.Tensor, tile: int) -> torch.Tensor:
        out = torch.empty_like(x)
        for i in range(0, x.shape[-2], tile):
            for j in range(0, x.shape[-1], tile):
                part = x[..., i:i + tile, j:j + tile]
                out[..., i:i + tile, j:j + tile] = vae.decode(vae.encode(part).mode())
        return out.clamp(-1, 1)

    with torch.no_grad():
        for tile in (args.size, *args.tiles):
            t0 = time.perf_counter()
            scores = [float(psnr_frames(reconstruct(x[None], tile), x[None]).mean()) for x in held]
            label = "whole frame" if tile == args.size else f"{tile}² tiles"
            print(f"{args.size}², {label}: {sum(scores) / len(scores):.2f} dB "
                  f"(per window {' '.join(f'{v:.1f}' for v in scores)}; {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
