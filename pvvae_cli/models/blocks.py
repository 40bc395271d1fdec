"""Building blocks of the PV-VAE encoder and decoder, all causal in time and streamable.

Every block takes ``x`` of layout ``(B, C, T, H, W)`` and an optional ``StreamState`` for chunked inference.
Normalisation is RMS over channels at each position (no statistics across time or space), which keeps the
network causal, lets chunked inference match one pass exactly, and keeps spatial tiles independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.causal_conv import CausalConv3d, StreamState


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over the channel axis of ``(B, C, T, H, W)`` with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The statistic must not be accumulated in bf16 (a sum of squares over hundreds of channels would lose
        # too much precision). For bf16 input the squares stay bf16 (each rounded to nearest, unbiased) and the
        # mean is accumulated in fp32 by the reduction kernel itself (CPU and CUDA accumulate bf16 in fp32),
        # then rounded once: as accurate in effect as an fp32 copy of the activation, which cost more than the
        # rest of the norm. Other dtypes (fp16 could overflow the squares) compute in fp32.
        if x.dtype == torch.bfloat16:
            ms = (x * x).mean(dim=1, keepdim=True).float()
        else:
            ms = x.float().pow(2).mean(dim=1, keepdim=True)
        rms = torch.rsqrt(ms + self.eps).to(x.dtype)
        return x * rms * self.weight.to(x.dtype).view(1, -1, 1, 1, 1)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = ChannelRMSNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.skip = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return h + (self.skip(x) if self.skip is not None else x)


class FrameAttention(nn.Module):
    """Single-head self-attention over the spatial positions of each frame separately (causal by design)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = ChannelRMSNorm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        q, k, v = self.qkv(y).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # each (B*T, H*W, C)
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        y = self.proj(y.transpose(1, 2).reshape(b * t, c, h, w))
        return x + y.reshape(b, t, c, h, w).transpose(1, 2)


class MidBlock(nn.Module):
    def __init__(self, channels: int, attention: bool) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels)
        self.attn = FrameAttention(channels) if attention else None
        self.res2 = ResBlock(channels, channels)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.res1(x, state)
        if self.attn is not None:
            x = self.attn(x)
        return self.res2(x, state)


class Downsample(nn.Module):
    """Halve H and W, and T too when ``temporal``: ``1 + 2k`` frames become ``1 + k`` (first frame alone)."""

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return self.conv(x, state)


class Upsample(nn.Module):
    """Double H and W, and T too when ``temporal``: ``1 + k`` frames become ``1 + 2k``.

    Temporal upsampling predicts two frames per input frame (a causal conv to ``2C`` channels, then
    depth-to-time) and drops the very first output frame of the stream, so the first frame stays single.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.time_conv is not None:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, state)  # (B, 2C, T, H, W): channels [0, C) -> even frames, [C, 2C) -> odd
            cl = torch.channels_last_3d
            if y.is_contiguous(memory_format=cl) and not (torch.is_grad_enabled() and y.requires_grad):
                # Inference on channels-last activations: interleave into channels-last too (the stack below
                # would return the standard layout, which the next convolution would have to transpose back).
                x = torch.empty((b, c, 2 * t, h, w), dtype=y.dtype, device=y.device, memory_format=cl)
                x[:, :, 0::2] = y[:, :c]
                x[:, :, 1::2] = y[:, c:]
            else:
                y = y.view(b, 2, c, t, h, w)
                x = torch.stack([y[:, 0], y[:, 1]], dim=3).view(b, c, 2 * t, h, w)  # interleave: (B, C, 2T, H, W)
            if state is None or state.first_call(self):
                x = x[:, :, 1:]
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (B, C, T, 2H, 2W)
        return self.conv(x, state)


def init_identity_residuals(model: nn.Module) -> None:
    """Make every residual block of ``model`` start as the identity and temporal upsampling as frame repetition
    (part of ``VideoVAE.initialize_weights``; see there for why)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ResBlock) and not m.conv2.weight.is_meta:
                m.conv2.weight.zero_()
            elif isinstance(m, FrameAttention) and not m.proj.weight.is_meta:
                m.proj.weight.zero_()
            elif isinstance(m, Upsample) and m.time_conv is not None and not m.time_conv.weight.is_meta:
                w = m.time_conv.weight  # (2C, C, 3, 1, 1): output channels [0, C) even frames, [C, 2C) odd
                c = w.shape[1]
                eye = torch.eye(c, dtype=w.dtype, device=w.device)
                w.zero_()
                w[:c, :, -1, 0, 0] = eye
                w[c:, :, -1, 0, 0] = eye
