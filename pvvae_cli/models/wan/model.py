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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.frames import check_frame_count
from pvvae_cli.models import weights
from pvvae_cli.models.causal_conv import CausalConv3d, StreamState
from pvvae_cli.models.posterior import DiagonalGaussian
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


class Encoder(nn.Module):
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
            h = block(h, state)
        h = self.mid_block(h, state)  # (B, C_top, t, h, w)
        return self.conv_out(F.silu(self.norm_out(h)), state)  # (B, 2*latent, t, h, w)


class Decoder(nn.Module):
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
        h = self.mid_block(self.conv_in(z, state), state)  # (B, C_top, t, h, w)
        for block in self.up_blocks:
            h = block(h, state)
        return self.conv_out(F.silu(self.norm_out(h)), state)  # (B, 3*p*p, T, H/p, W/p)


class WanVAE(nn.Module):
    """Wan's VAE: ``encode`` pixels to a ``DiagonalGaussian`` over latents, ``decode`` latents to pixels."""

    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.quant_conv = CausalConv3d(2 * c, 2 * c, 1)
        self.post_quant_conv = CausalConv3d(c, c, 1)
        self.decoder = Decoder(config)
        # One token per channel for the latent frames predictive training drops; zero is the prior's mean.
        self.padding_token = nn.Parameter(torch.zeros(c)) if config.padding_mode == "learnable" else None
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

    @classmethod
    def from_preset(cls, name: str, **overrides) -> WanVAE:
        """Randomly initialised weights (PyTorch's default init) of a preset (``wan2.1``, ``wan2.2``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown Wan preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(PRESETS[name].replace(**overrides) if overrides else PRESETS[name])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path, model_card: str | None = None) -> Path:
        """Write pvvae's weights folder (``config.json`` with ``class_name: WanVAE`` + ``model.safetensors``)."""
        return weights.save_pretrained(self, directory, model_card=model_card)

    # ------------------------------------------------------------------ training (protocol.TrainableAutoencoder)
    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's and ``quant_conv``'s: everything before the latents."""
        yield from self.encoder.parameters()
        yield from self.quant_conv.parameters()

    def last_decoder_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    # ------------------------------------------------------------------ shape checks
    def check_pixels(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, 3, 1+tc*k, H, W)`` with H, W multiples of ``s``."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"pixels must be (B, {cfg.in_channels}, T, H, W), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        check_frame_count(t, cfg.temporal_compression)
        s = cfg.spatial_compression
        if h % s or w % s:
            raise ValueError(f"height and width must be multiples of {s}, got {h}x{w}; pad or resize first")

    def check_latents(self, z: torch.Tensor) -> None:
        c = self.config.latent_channels
        if z.ndim != 5 or z.shape[1] != c:
            raise ValueError(f"latents must be (B, {c}, t, h, w) for this model, got shape {tuple(z.shape)}")

    # ------------------------------------------------------------------ one pass
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``x``: ``(B, 3, 1+tc*k, H, W)`` in [-1, 1] -> posterior over ``(B, C, 1+k, H/s, W/s)``."""
        self.check_pixels(x)
        return self._encode(x, None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, C, 1+k, h, w)`` -> pixels ``(B, 3, 1+tc*k, s*h, s*w)``, nominally in [-1, 1] (not clamped;
        diffusers clamps)."""
        self.check_latents(z)
        return self._decode(z, None)

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    def _encode(self, x: torch.Tensor, state: StreamState | None) -> DiagonalGaussian:
        self._ensure_channels_last_kernels()
        h = self.encoder(patchify(x, self.config.patch_size), state)
        return DiagonalGaussian.from_moments(self.quant_conv(h))

    def _decode(self, z: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        self._ensure_channels_last_kernels()
        return unpatchify(self.decoder(self.post_quant_conv(z), state), self.config.patch_size)

    # ------------------------------------------------------------------ streaming (see models.protocol)
    def new_stream(self) -> StreamState:
        return StreamState()

    def encode_chunk(self, x: torch.Tensor, stream: StreamState) -> DiagonalGaussian:
        """The next chunk ``(B, 3, n, H, W)`` of ``stream``'s clip (``n = 1`` first, then a multiple of ``tc``) ->
        the posterior of its latent frames; concatenated they equal ``encode`` of the whole clip."""
        tc = self.config.temporal_compression
        first = not stream.has_started(self)
        n = x.shape[2] if x.ndim == 5 else -1
        if first and n != 1:
            raise ValueError(f"the first chunk of a stream must hold 1 frame, got shape {tuple(x.shape)}")
        if not first and (n < 1 or n % tc):
            raise ValueError(f"chunks after the first must hold a multiple of {tc} frames, got shape {tuple(x.shape)}")
        self.check_pixels(x[:, :, :1])
        stream.first_call(self)
        return self._encode(x, stream)

    def decode_chunk(self, z: torch.Tensor, stream: StreamState) -> torch.Tensor:
        """The next latent chunk ``(B, C, n, h, w)`` (any ``n >= 1``) -> its pixels, not clamped."""
        self.check_latents(z)
        return self._decode(z, stream)

    # ------------------------------------------------------------------ latent space
    def pad_latents(self, z: torch.Tensor, num_frames: int, mode: str | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``num_frames`` padding latent frames to ``z`` ``(B, C, t, h, w)``: the learned ``padding_token``
        (``learnable``) or N(0, I) samples (``gaussian``); default: the config's ``padding_mode``."""
        mode = mode or self.config.padding_mode
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        if num_frames == 0:
            return z
        b, c, _, h, w = z.shape
        if mode == "learnable":
            if self.padding_token is None:
                raise ValueError("this model has no learned padding token; use gaussian padding")
            pad = self.padding_token.to(z.dtype).view(1, c, 1, 1, 1).expand(b, c, num_frames, h, w)
        elif mode == "gaussian":
            pad = torch.randn((b, c, num_frames, h, w), generator=generator, device=z.device, dtype=z.dtype)
        else:
            raise ValueError(f"unknown padding mode {mode!r}; use learnable or gaussian")
        return torch.cat([z, pad], dim=2)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z)
        return z if mean is None else (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z)
        return z if mean is None else z * std + mean

    def _latent_stats(self, z: torch.Tensor):
        cfg = self.config
        if cfg.latents_mean is None:
            return None, None
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=z.device, dtype=z.dtype).view(shape)
        std = torch.tensor(cfg.latents_std, device=z.device, dtype=z.dtype).view(shape)
        return mean, std


__all__ = ["AttentionBlock", "Decoder", "Encoder", "WanVAE", "patchify", "unpatchify"]
