"""``WanVAE``: the Wan2.1 / Wan2.2 video VAE behind pvvae's model protocol (``models.protocol.VideoAutoencoder``).

Public boundary (``tc``, ``s``: the config's temporal and spatial compression; t4s8 for Wan2.1, t4s16 for Wan2.2):

- pixels ``x``: float ``(B, 3, 1 + tc*k, H, W)`` in [-1, 1], ``H, W`` multiples of ``s``;
- latents ``z``: ``(B, C, 1 + k, H/s, W/s)``, raw (``normalize_latents`` applies Wan's published per-channel
  mean and std: ``(z - mean) / std``).

Module names and state-dict keys are diffusers' ``AutoencoderKLWan`` ones (``encoder.down_blocks.N...``,
``quant_conv``, ``post_quant_conv``, ...), so its ``diffusion_pytorch_model.safetensors`` loads as is; the original
Wan ``.pth`` is translated by ``checkpoint``. ``padding_token`` (predictive fine-tuning) is pvvae's addition and
exists only when ``config.padding_mode == "learnable"``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.causal_autoencoder import CausalConvAutoencoder
from pvvae_cli.models.causal_conv import CausalConv3d, StreamState
from pvvae_cli.models.checkpointing import GradCheckpointing
from pvvae_cli.models.precision import fp32_posterior
from pvvae_cli.models.wan.config import PRESETS, WanVAEConfig
from pvvae_cli.models.wan.layers import (
    AttentionBlock,
    MidBlock,
    Resample,
    ResidualBlock,
    ResidualDownBlock,
    ResidualUpBlock,
    UpBlock,
    WanRMSNorm,
)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, C*p*p, T, H/p, W/p)``; channel ``c*p*p + dx*p + dy`` holds pixel offset
    ``(dy, dx)`` (Wan's order: the column offset before the row offset)."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)  # (B, C, dx, dy, T, H/p, W/p)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of ``patchify``."""
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    x = x.reshape(b, cpp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)  # (B, C, T, H, dy, W, dx)
    return x.reshape(b, cpp // (p * p), t, h * p, w * p)


class Encoder(GradCheckpointing, nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in (1, *cfg.channel_multipliers)]
        last = len(cfg.channel_multipliers) - 1
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, widths[0], 3)
        self.down_blocks = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            temporal = i < last and cfg.temporal_downsample[i]
            if cfg.residual:
                self.down_blocks.append(ResidualDownBlock(w_in, w_out, cfg.layers_per_block, temporal, i < last))
                continue
            # Wan2.1: a flat list of residual blocks with a Resample after each level but the last.
            for j in range(cfg.layers_per_block):
                self.down_blocks.append(ResidualBlock(w_in if j == 0 else w_out, w_out))
            if i < last:
                self.down_blocks.append(Resample(w_out, "downsample3d" if temporal else "downsample2d"))
        self.mid_block = MidBlock(widths[-1])
        self.norm_out = WanRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * cfg.latent_channels, 3)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv_in(x, state)  # (B, C0, T, H, W)
        for block in self.down_blocks:
            # Wan2.1's flat list: each residual block checkpointed on its own, the resamples not (their saved input
            # is about what a checkpoint would keep). Wan2.2's stages checkpoint their residual blocks themselves.
            if isinstance(block, ResidualBlock):
                h = self.run_block(block, h, state=state)
            else:
                h = block(h, state)
        h = F.silu(self.norm_out(self.run_block(self.mid_block, h, state=state)))  # (B, C_top, t, h, w)
        with fp32_posterior(h):  # the posterior's projections in fp32, not bf16 (models.precision)
            return self.conv_out(h.float(), state)  # (B, 2*latent, t, h, w)


class Decoder(GradCheckpointing, nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        mults = cfg.channel_multipliers
        widths = [cfg.decoder_width * m for m in (mults[-1], *mults[::-1])]
        last = len(mults) - 1
        temporal_up = cfg.temporal_downsample[::-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, widths[0], 3)
        self.mid_block = MidBlock(widths[0])
        self.up_blocks = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            temporal = i < last and temporal_up[i]
            blocks = cfg.layers_per_block + 1
            if cfg.residual:
                self.up_blocks.append(ResidualUpBlock(w_in, w_out, blocks, temporal, i < last))
            else:
                mode = None if i == last else ("upsample3d" if temporal else "upsample2d")
                self.up_blocks.append(UpBlock(w_in if i == 0 else w_in // 2, w_out, blocks, mode))
        self.norm_out = WanRMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], cfg.in_channels * cfg.patch_size**2, 3)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.run_block(self.mid_block, self.conv_in(z, state), state=state)  # (B, C_top, t, h, w)
        for block in self.up_blocks:
            h = block(h, state)
        return self.run_block(self.to_pixels, h, state=state)  # (B, 3*p*p, T, H/p, W/p)

    def to_pixels(self, h: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """The output layers: a block of their own for checkpointing (they keep three full-resolution activations
        and recompute for the price of a norm and a conv to a few channels)."""
        return self.conv_out(F.silu(self.norm_out(h)), state)


class WanVAE(CausalConvAutoencoder):
    """Wan's VAE: ``encode`` pixels to a ``DiagonalGaussian`` over latents, ``decode`` latents to pixels."""

    presets = PRESETS

    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.quant_conv = CausalConv3d(2 * c, 2 * c, 1)
        self.post_quant_conv = CausalConv3d(c, c, 1)
        self.decoder = Decoder(config)
        self._init_padding_token()
        self.channels_last_kernels()

    def channels_last_kernels(self) -> None:
        """Store the conv kernels of the CPU inference path channels-last (same values and state-dict keys), one at
        a time, so no more than one extra kernel exists at once.

        That path feeds oneDNN channels-last activations, and oneDNN reorders a standard-layout kernel on every
        call; for Wan's wide layers at small sizes (streaming decodes one latent frame at a time) the reorder
        costs more than the convolution (1024 channels at 3x8x8: 0.53 s vs 0.29 s per call in fp32, 0.28 s vs
        0.18 s in bf16, measured on the build machine). Loaders put the file's standard-layout tensors in place,
        so ``encode``/``decode`` call this again when needed (not a load hook: the loader still holds the file's
        tensors then, and converting would double peak memory)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv3d) and m.weight.shape[-3:] != (1, 1, 1):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
                elif isinstance(m, nn.Conv2d) and m.weight.shape[-2:] != (1, 1):  # frame_conv's kernels
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    def _ensure_channels_last_kernels(self) -> None:
        if not self.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d):
            self.channels_last_kernels()

    # ------------------------------------------------------------------ training (protocol.TrainableAutoencoder)
    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's and ``quant_conv``'s: everything before the latents."""
        yield from self.encoder.parameters()
        yield from self.quant_conv.parameters()

    # ------------------------------------------------------------------ the base class's hooks
    def _moments(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        self._ensure_channels_last_kernels()
        h = self.encoder(patchify(x, self.config.patch_size), state)  # fp32 (its conv_out ran in fp32)
        with fp32_posterior(h):
            return self.quant_conv(h.float())

    def _pixels(self, z: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        self._ensure_channels_last_kernels()
        return unpatchify(self.decoder(self.post_quant_conv(z), state), self.config.patch_size)


__all__ = ["AttentionBlock", "Decoder", "Encoder", "WanVAE", "patchify", "unpatchify"]
