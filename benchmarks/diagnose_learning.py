"""Why the PV-VAE network did not learn, measured: activation and gradient scales per block at init, and the first
overfitting steps, with the old initialisation (PyTorch's default for every conv) and with the model's own.

Usage: python benchmarks/diagnose_learning.py [--preset tiny] [--frames 1] [--size 64] [--clips 4] [--lr 1e-3]
       [--steps 300] [--inits default model]

Data: ``SyntheticClips("mix", frames=F, size=S, seed=0)`` items 0..clips-1. Loss: MSE of
``decode(encode(x).mode())``, Adam at constant ``--lr``.

Printed per init:
- per block output at init: RMS of the activation, its std across the clips (how much of the signal tells the
  clips apart), and the RMS of the loss gradient reaching it;
- the first steps: PSNR, the latent mean's std across clips and its RMS, the gradient norms of encoder and decoder,
  the output's std.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F


def block_stats(vae, x: torch.Tensor) -> list[tuple[str, tuple, float, float, float]]:
    from pvvae_cli.models.blocks import Downsample, MidBlock, ResBlock, Upsample

    rows, hooks = [], []

    def hook(name):
        def f(_m, _inp, out):
            out.retain_grad()
            rows.append((name, out))

        return f

    ends = ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out")
    for name, m in vae.named_modules():
        if isinstance(m, (ResBlock, MidBlock, Downsample, Upsample)) or name in ends:
            hooks.append(m.register_forward_hook(hook(name)))
    y = vae.decode(vae.encode(x).mode())
    F.mse_loss(y, x).backward()
    for h in hooks:
        h.remove()
    vae.zero_grad(set_to_none=True)
    out = []
    for name, a in rows:
        if name == "encoder.conv_out":  # the posterior moments: report the mean half only
            a, g = a[:, : a.shape[1] // 2], a.grad[:, : a.shape[1] // 2]
        else:
            g = a.grad
        a = a.detach()
        out.append((name, tuple(a.shape), a.pow(2).mean().sqrt().item(), a.std(0).mean().item(),
                    g.pow(2).mean().sqrt().item()))
    return out


def first_steps(vae, x: torch.Tensor, steps: int, lr: float, log: set[int]) -> None:
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    print("| step | PSNR dB | latent std across clips | latent RMS | encoder grad norm | decoder grad norm "
          "| output std |")
    print("|---|---|---|---|---|---|---|")
    for step in range(steps + 1):
        z = vae.encode(x).mode()
        y = vae.decode(z)
        loss = F.mse_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step in log or step == steps:
            mse = ((y.detach().clamp(-1, 1) - x) / 2).pow(2).mean().item()
            eg = math.sqrt(sum(p.grad.pow(2).sum().item() for p in vae.encoder.parameters()))
            dg = math.sqrt(sum(p.grad.pow(2).sum().item() for p in vae.decoder.parameters()))
            zd = z.detach()
            print(f"| {step} | {-10 * math.log10(mse):.2f} | {zd.std(0).mean():.3f} | {zd.pow(2).mean().sqrt():.3f} "
                  f"| {eg:.4f} | {dg:.4f} | {y.detach().std():.3f} |", flush=True)
        if step == steps:
            break
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--inits", nargs="+", default=["default", "model"], choices=["default", "model"])
    args = ap.parse_args()

    from pvvae_cli import VideoVAE
    from pvvae_cli.train.learning import pytorch_default_init_
    from pvvae_cli.train.synthetic import SyntheticClips

    data = SyntheticClips("mix", frames=args.frames, size=args.size, seed=0)
    x = torch.stack([data[i] for i in range(args.clips)])
    for init in args.inits:
        torch.manual_seed(0)
        vae = VideoVAE.from_preset(args.preset).train()
        if init == "default":
            pytorch_default_init_(vae)
        print(f"\n## {args.preset}, {init} init: {args.clips} clips x {args.frames} frames x {args.size}^2")
        print("| block output | shape | activation RMS | std across clips | gradient RMS |")
        print("|---|---|---|---|---|")
        for name, shape, rms, across, grad in block_stats(vae, x):
            print(f"| {name} | {shape} | {rms:.4f} | {across:.4f} | {grad:.2e} |")
        print()
        first_steps(vae, x, args.steps, args.lr, {0, 5, 20, 50, 100, 200})


if __name__ == "__main__":
    main()
