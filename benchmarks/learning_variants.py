"""Variants tried while fixing the learning issue: does a change of init, norm or lr let ``tiny`` overfit clips faster?

Usage: python benchmarks/learning_variants.py [--frames 17] [--steps 300] [--variants model groupnorm ...]

Each variant builds ``tiny`` with the model's own init, applies one change, and overfits
``SyntheticClips("mix", frames=F, size=64, seed=0)`` items 0-3 with Adam (lr 1e-3 unless the variant sets one),
MSE of ``decode(encode(x).mode())``; prints the final PSNR (dB) and the per-clip PSNR. Variants:

- ``model``: the model as it is;
- ``lr3e-4``, ``lr1.5e-4``, ``lr3e-3``: another learning rate;
- ``latent16``: 16 latent channels instead of 8;
- ``base16``: twice the width at every level (base_channels 16: 1.17 M parameters instead of 0.30 M);
- ``shortcut``: a trainable linear block codec added beside the network (a (tc, s, s) patch conv to the latent
  channels, added to the posterior mean, and its transpose added to the decoded pixels; the first frame has its
  own (1, s, s) pair), initialised as a random orthonormal projection: does a linear path speed up learning?
- ``pca-shortcut``: the model's own linear block shortcut (``VAEConfig.linear_shortcut``, the network's outputs
  starting at zero) fitted by block PCA on the clips before step 0, as ``pvvae train --shortcut-pca`` does;
- ``rand-shortcut``: the same shortcut left at its random orthonormal start (no PCA);
- ``pca8``, ``pca16``, ``pca32``: no network: the block-PCA codec (``eval.baselines.BlockPCA``) with that many
  components fitted on the same clips it is scored on (the best linear code of that size, in-sample).
- ``groupnorm``: the channel RMS norm replaced by a per-frame GroupNorm(1) (statistics over C, H, W of each
  frame: still causal, but spatial tiles would no longer be independent; a diagnostic, not an option);
- ``avgdown``: temporal downsampling convs start averaging their two newest taps instead of the newest only;
- ``randup``: temporal upsampling starts random (normal, fan-in scaled) instead of as frame repetition;
- ``no-identity``: residual blocks and attention start random (not as the identity).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn

VARIANTS = ("model", "lr3e-4", "lr1.5e-4", "lr2e-3", "lr3e-3", "latent16", "base16", "groupnorm", "avgdown", "randup",
            "no-identity", "shortcut", "pca-shortcut", "rand-shortcut", "pca8", "pca16", "pca32")


class FrameGroupNorm(nn.Module):
    """GroupNorm(1) over (C, H, W) of each frame of ``(B, C, T, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


@contextlib.contextmanager
def norm_replaced():
    from pvvae_cli.models import blocks
    from pvvae_cli.models.pvvae import model

    saved = blocks.ChannelRMSNorm, model.ChannelRMSNorm
    blocks.ChannelRMSNorm = model.ChannelRMSNorm = FrameGroupNorm
    try:
        yield
    finally:
        blocks.ChannelRMSNorm, model.ChannelRMSNorm = saved


def build(variant: str):
    from pvvae_cli import VideoVAE
    from pvvae_cli.models.blocks import Downsample, FrameAttention, ResBlock, Upsample
    from pvvae_cli.models.pvvae.model import init_current_frame_

    torch.manual_seed(0)
    if variant == "groupnorm":
        with norm_replaced():
            return VideoVAE.from_preset("tiny")
    overrides = {"latent16": {"latent_channels": 16}, "base16": {"base_channels": 16}}.get(variant, {})
    vae = VideoVAE.from_preset("tiny", **overrides)
    with torch.no_grad():
        for m in vae.modules():
            if variant == "avgdown" and isinstance(m, Downsample) and m.temporal:
                w = m.conv.weight
                w[:, :, -2] = w[:, :, -1] / 2
                w[:, :, -1] /= 2
            if variant == "randup" and isinstance(m, Upsample) and m.time_conv is not None:
                init_current_frame_(m.time_conv)
            if variant == "no-identity" and isinstance(m, ResBlock):
                init_current_frame_(m.conv2)
            if variant == "no-identity" and isinstance(m, FrameAttention):
                init_current_frame_(m.proj)
    return vae


class LinearShortcut(nn.Module):
    """The ``shortcut`` variant's linear block codec (see the module docstring); layouts as ``VideoVAE``'s."""

    def __init__(self, channels: int, tc: int = 4, s: int = 16) -> None:
        super().__init__()
        self.enc0 = nn.Conv3d(3, channels, (1, s, s), stride=(1, s, s))
        self.enc = nn.Conv3d(3, channels, (tc, s, s), stride=(tc, s, s))
        self.dec0 = nn.ConvTranspose3d(channels, 3, (1, s, s), stride=(1, s, s))
        self.dec = nn.ConvTranspose3d(channels, 3, (tc, s, s), stride=(tc, s, s))
        with torch.no_grad():
            for enc, dec in ((self.enc0, self.dec0), (self.enc, self.dec)):
                q, _ = torch.linalg.qr(torch.randn(enc.weight[0].numel(), channels))  # orthonormal columns
                enc.weight.copy_(q.T.reshape(enc.weight.shape))
                dec.weight.copy_(q.T.reshape(dec.weight.shape))
                enc.bias.zero_()
                dec.bias.zero_()

    def wrap(self, vae):
        def reconstruct(x: torch.Tensor) -> torch.Tensor:
            z = vae.encode(x).mode() + torch.cat([self.enc0(x[:, :, :1]), self.enc(x[:, :, 1:])], 2)
            return vae.decode(z) + torch.cat([self.dec0(z[:, :, :1]), self.dec(z[:, :, 1:])], 2)

        return reconstruct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args()

    from pvvae_cli.train.learning import overfit, psnr_db, vae_reconstruct
    from pvvae_cli.train.synthetic import SyntheticClips

    data = SyntheticClips("mix", frames=args.frames, size=64, seed=0)
    x = torch.stack([data[i] for i in range(4)])
    for variant in args.variants:
        if variant.startswith("pca") and variant[3:].isdigit():
            from pvvae_cli.eval.baselines import BlockPCA

            y = BlockPCA.fit([x], 4, 16, int(variant[3:])).reconstruct(x)
            each = ", ".join(f"{data.kind_of(i)} {psnr_db(y[i : i + 1], x[i : i + 1]):.2f}" for i in range(4))
            print(f"{variant:12s} (in-sample linear bound): {psnr_db(y, x):.2f} dB; {each}", flush=True)
            continue
        lr = float(variant[2:]) if variant.startswith("lr") else 1e-3
        if variant.endswith("-shortcut"):
            from pvvae_cli import VideoVAE
            from pvvae_cli.eval.baselines import BlockPCA

            torch.manual_seed(0)
            vae = VideoVAE.from_preset("tiny", linear_shortcut=True).train()
            if variant == "pca-shortcut":
                vae.init_shortcut_from_pca(BlockPCA.fit([x], 4, 16, vae.config.latent_channels))
        else:
            vae = build(variant).train()
        reconstruct, params = vae_reconstruct(vae), list(vae.parameters())
        if variant == "shortcut":
            shortcut = LinearShortcut(vae.config.latent_channels)
            reconstruct, params = shortcut.wrap(vae), params + list(shortcut.parameters())
        end = overfit(reconstruct, params, x, args.steps, lr)[-1]
        with torch.no_grad():
            y = reconstruct(x)
        each = ", ".join(f"{data.kind_of(i)} {psnr_db(y[i : i + 1], x[i : i + 1]):.2f}" for i in range(4))
        print(f"{variant:12s} lr {lr:g}: {end.psnr:.2f} dB after {args.steps} steps ({end.seconds:.0f} s); {each}",
              flush=True)


if __name__ == "__main__":
    main()
