"""Does IV-VAE's initialisation matter? ``ivvae-tiny`` overfits fixed clips and images with its own init, with
PyTorch's default init, and with live residual branches; ``PlainConvAE`` is the reference.

Usage: python benchmarks/ivvae_init_variants.py [--steps 150] [--lr 3e-4]

Data: ``SyntheticClips("mix", size=32, seed=0)``: items 0-1 as 5-frame clips, items 0-3 as single images (the
setting of ``tests/test_ivvae_learning.py`` and ``tests/test_learning.py``). Adam on the MSE of
``decode(encode(x).mode())``; prints the PSNR (dB) at steps 50, 100 and the end. Variants:

- ``model``: the model's own ``initialize_weights`` (scale-preserving, GCConv on the current frame, residual
  branches and attention outputs at zero, temporal resampling as mean/repetition);
- ``default``: PyTorch's default init of every convolution;
- ``live-residual``: the model's init, but the last conv of each residual branch random (fan-in scaled).
"""

from __future__ import annotations

import argparse
import time

import torch

from pvvae_cli.models.group_causal_conv import GroupCausalConv3d
from pvvae_cli.models.ivvae.layers import ResBlock
from pvvae_cli.models.ivvae.model import IVVAE
from pvvae_cli.train.learning import PlainConvAE, overfit, vae_reconstruct
from pvvae_cli.train.synthetic import SyntheticClips

VARIANTS = ("model", "default", "live-residual", "plain")


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "plain":
        return PlainConvAE()
    vae = IVVAE.from_preset("ivvae-tiny").train()
    with torch.no_grad():
        for m in vae.modules():
            if variant == "default" and isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
                m.reset_parameters()
            elif variant == "live-residual" and isinstance(m, ResBlock):
                for conv in m.conv2.modules():
                    if isinstance(conv, GroupCausalConv3d):
                        w = conv.weight
                        w[:, :, w.shape[2] // 2].normal_(0.0, (w.shape[1] * w.shape[3] * w.shape[4]) ** -0.5)
                    elif isinstance(conv, torch.nn.Conv2d):
                        conv.weight.normal_(0.0, conv.weight[0].numel() ** -0.5)
    return vae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-4, help="for the IV-VAE variants (PlainConvAE: 1e-3)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = SyntheticClips("mix", frames=5, size=32, seed=0)
    images = SyntheticClips("mix", frames=1, size=32, seed=0)
    sets = {"clips 2x5x32x32": torch.stack([data[i] for i in range(2)]),
            "images 4x32x32": torch.stack([images[i] for i in range(4)])}
    for label, x in sets.items():
        for variant in VARIANTS:
            model = build(variant)
            fn = model if variant == "plain" else vae_reconstruct(model)
            lr = 1e-3 if variant == "plain" else args.lr
            t0 = time.perf_counter()
            curve = overfit(fn, model.parameters(), x, args.steps, lr, log_steps=(50, 100))
            print(f"{label:<16} {variant:<14} lr {lr:g}: " + " ".join(f"{p.step}:{p.psnr:.2f}" for p in curve)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
