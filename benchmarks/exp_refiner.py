"""Experiment (issue 13): what learns to correct the block-PCA code within a CPU budget: the decoder or a pixel head?

A ``--shortcut-pca`` PV-VAE starts as block PCA; its network is meant to learn what the linear code misses. In the
trainer its decoder stayed flat (``finetune-decoder --freeze-shortcut --lr 1e-3``, 400 steps: held-out 24.11 →
24.10 → 24.10 dB). This script trains each candidate with the same data, batch, steps and optimiser (AdamW, lr
``--lr`` after a 30-step warm-up, MSE, bf16 autocast) on the *frozen* PCA code of ``--clips`` training crops and
prints held-out PSNR (64², ``pvvae eval --windows 4`` windows) every 100 steps:

- ``decoder``: the model's decoder (everything but its linear shortcut) learns, input the latents;
- ``head-causal``: a residual conv head on the PCA reconstruction, strictly causal in time (CausalConv3d);
- ``head-group``: the same head with group-causal convs (group 4: a latent group's frames see each other), i.e.
  ``models.pixel_refiner.PixelRefiner``, what ``--refiner`` adds to the decoder;
- ``head-group-W``: that head with width W.

    python benchmarks/exp_refiner.py --train data/train --heldout data/heldout [--init PCA_MODEL] \
        [--variants decoder head-causal head-group head-group-64] [--steps 300]

``--init``: a small PV-VAE whose linear shortcut holds the PCA code (its network outputs still zero); without it
the script builds one, block PCA on ``--fit`` multi-scale 64² training crops (~4 min for 1024).

Measured (0.9.0, this script, 2 threads, AMD EPYC: ``--init`` = a small PV-VAE with its shortcut fitted on 1024
multi-scale crops of the 7 training clips of examples/get_data.sh; defaults otherwise: 256 crops of 64² (short side
64..256), batch 2, lr 1e-3, 300 steps; held-out PSNR at steps 0 / 100 / 200 / 300):
decoder 23.78 / 23.78 / 23.78 / 23.78 (216 s); head-causal 23.78 / 23.84 / 23.89 / 23.86 (47 s); head-group 23.78 /
24.01 / 23.98 / 23.94 (50 s). A head on the pixels learns at once; the decoder's deep path from the latents does not,
in this budget. (0.8.0's first form of this script, same settings: head-group 24.01 / 24.05 / 23.97, head-group-64
23.86 / 24.05 / 24.05 at 3x the time; the decoder also stayed flat with the linear reconstruction fed to its
full-resolution level and with standardised latents.)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from bench_baselines import windows  # this script's folder is on sys.path
from torch import nn


class _Head(nn.Module):
    """``PixelRefiner``'s layout with a choice of convolution (for the strictly causal variant)."""

    def __init__(self, conv, width: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.inp = conv(3, width, 3)
        self.body = nn.ModuleList([conv(width, width, 3) for _ in range(blocks)])
        self.out = conv(width, 3, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.inp(x))
        for c in self.body:
            h = h + F.silu(c(h))
        return x + self.out(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default="data/train")
    ap.add_argument("--heldout", default="data/heldout")
    ap.add_argument("--init", default=None, help="PV-VAE weights with a PCA-fitted linear shortcut")
    ap.add_argument("--fit", type=int, default=1024, help="crops for the PCA fit when --init is not given")
    ap.add_argument("--variants", nargs="+", default=["decoder", "head-causal", "head-group"])
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    from pvvae_cli.models.registry import build_model, get_preset, load_model
    from pvvae_cli.train.build import fit_shortcut
    from pvvae_cli.train.data import make_dataset

    t0 = time.time()
    data = make_dataset([args.train], 17, 64, scale_max=256)
    if args.init:
        base = load_model(args.init)
    else:
        torch.manual_seed(0)
        base = build_model(get_preset("small").replace(linear_shortcut=True))
        fit_shortcut(base, data, args.fit)
    crops = torch.stack([data[i][0] for i in range(args.clips)])
    held = windows(args.heldout, 17, 4, 64)
    print(f"data and PCA ready in {time.time() - t0:.0f} s", flush=True)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for variant in args.variants:
        run_variant(variant, base.config, state, crops, held, args)


def run_variant(variant: str, config, state: dict, crops: torch.Tensor, held: list[torch.Tensor], args) -> None:
    from pvvae_cli.metrics.image import psnr_frames
    from pvvae_cli.models.causal_conv import CausalConv3d
    from pvvae_cli.models.group_causal_conv import GroupCausalConv3d
    from pvvae_cli.models.registry import build_model

    torch.manual_seed(0)
    vae = build_model(config)
    vae.load_state_dict(state)
    vae.train().requires_grad_(False)
    with torch.no_grad():
        zs = vae.encode(crops).mode()
    linear = vae.decoder.shortcut
    if variant == "decoder":
        params = [p for n, p in vae.decoder.named_parameters() if not n.startswith("shortcut")]
        net = vae.decoder
    else:
        conv = CausalConv3d if variant == "head-causal" else lambda i, o, k: GroupCausalConv3d(i, o, k, 4)
        width = int(variant.rsplit("-", 1)[1]) if variant.count("-") == 2 else 32
        head = _Head(conv, width)
        params = list(head.parameters())
        net = lambda z: head(linear(z))  # noqa: E731
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    def evaluate() -> str:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            a = b = 0.0
            for x in held:
                z = vae.encode(x[None]).mode()
                a += float(psnr_frames(linear(z).float().clamp(-1, 1), x[None]).mean())
                b += float(psnr_frames(net(z).float().clamp(-1, 1), x[None]).mean())
        return f"PCA {a / len(held):.2f} dB, {variant} {b / len(held):.2f} dB"

    start = time.time()
    print(f"{variant} step 0: {evaluate()}", flush=True)
    g = torch.Generator().manual_seed(1)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(crops), (args.batch,), generator=g)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 30)
        with torch.autocast("cpu", torch.bfloat16):
            out = net(zs[idx])
        loss = F.mse_loss(out.float(), crops[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"{variant} step {step} ({time.time() - start:.0f} s): {evaluate()}", flush=True)

if __name__ == "__main__":
    main()
