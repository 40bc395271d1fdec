"""IV-VAE layers with keyframe temporal compression (KTC): every feature tensor is ``[keyframe half | motion
half]`` along channels, ``(B, 2*C, T, H, W)``.

The keyframe (2-D) half is computed frame by frame; the motion (3-D) half by a ``GroupCausalConv3d``; both read
both halves. Normalisation is per half. Levels whose frames each stand for a whole latent frame use plain
per-frame convolutions (``FrameConv``) that mix the halves freely. Every layer takes an optional ``StreamState``
and gives chunk by chunk what it gives in one pass. With ``split=False`` (the ablation without KTC) the same
layers keep one stream of the same total width: GCConv instead of KTC, norms and attention over all channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.blocks import ChannelRMSNorm, FrameAttention
from pvvae_cli.models.causal_conv import StreamState
from pvvae_cli.models.group_causal_conv import GroupCausalConv3d


def per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D ``module`` to every frame of ``x`` ``(B, C, T, H, W)``."""
    b, _, t = x.shape[:3]
    y = module(x.transpose(1, 2).flatten(0, 1))  # (B*T, C', H', W')
    return y.unflatten(0, (b, t)).transpose(1, 2)


class FrameConv(nn.Conv2d):
    """A 2-D convolution applied to every frame (``same`` padding); ``(B, C, T, H, W)`` -> ``(B, O, T, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                         dilation=dilation)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return per_frame(super().forward, x)


class KTCConv(nn.Module):
    """Keyframe half: a per-frame ``Conv2d``; motion half: a ``GroupCausalConv3d``; both read every input channel.
    ``(B, C, T, H, W)`` -> ``(B, out_key + out_motion, T, H, W)``."""

    def __init__(self, in_channels: int, out_key: int, out_motion: int, kernel_size: int, group: int) -> None:
        super().__init__()
        self.conv_2d = nn.Conv2d(in_channels, out_key, kernel_size, padding=kernel_size // 2)
        self.conv_3d = GroupCausalConv3d(in_channels, out_motion, kernel_size, group=group)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return torch.cat([per_frame(self.conv_2d, x), self.conv_3d(x, state)], dim=1)


def conv(in_channels: int, out_half: int, kernel_size: int, group: int, split: bool = True) -> nn.Module:
    """A convolution to ``2 * out_half`` channels where frames form groups (``group > 1``): KTC (``split``) or a
    plain GCConv (the ablation without keyframe compression); 2-D otherwise."""
    if group > 1:
        if split:
            return KTCConv(in_channels, out_half, out_half, kernel_size, group)
        return GroupCausalConv3d(in_channels, 2 * out_half, kernel_size, group=group)
    return FrameConv(in_channels, 2 * out_half, kernel_size)


def norm(channels: int, split: bool = True) -> nn.Module:
    """Per-half RMS norm with keyframe compression, else over all channels."""
    return HalfRMSNorm(channels) if split else ChannelRMSNorm(channels)


def attention(half: int, split: bool = True) -> nn.Module:
    """Frame attention on each half with keyframe compression, else on all channels."""
    return HalfAttention(half) if split else FrameAttention(2 * half)


class HalfRMSNorm(nn.Module):
    """RMS normalisation over the channels of each half separately, with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2C, T, H, W)
        b, c = x.shape[:2]
        halves = x.float().unflatten(1, (2, c // 2))  # (B, 2, C, T, H, W); statistics in fp32
        halves = halves * torch.rsqrt(halves.pow(2).mean(dim=2, keepdim=True) + self.eps)
        return halves.flatten(1, 2).to(x.dtype) * self.weight.to(x.dtype).view(1, -1, 1, 1, 1)


class ResBlock(nn.Module):
    """Pre-norm residual block on ``2*in_half`` -> ``2*out_half`` channels (KTC, GCConv or 2-D: see ``conv``)."""

    def __init__(self, in_half: int, out_half: int, group: int, split: bool = True) -> None:
        super().__init__()
        self.norm1 = norm(2 * in_half, split)
        self.conv1 = conv(2 * in_half, out_half, 3, group, split)
        self.norm2 = norm(2 * out_half, split)
        self.conv2 = conv(2 * out_half, out_half, 3, group, split)
        self.skip = conv(2 * in_half, out_half, 1, group, split) if in_half != out_half else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return h + (self.skip(x, state) if self.skip is not None else x)


class HalfAttention(nn.Module):
    """Frame attention (single head, over each frame's positions) on each half separately."""

    def __init__(self, half: int) -> None:
        super().__init__()
        self.attn_2d = FrameAttention(half)
        self.attn_3d = FrameAttention(half)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        key, motion = x.chunk(2, dim=1)
        return torch.cat([self.attn_2d(key), self.attn_3d(motion)], dim=1)


class Downsample(nn.Module):
    """Halve H and W of each half (stride-2 conv, padded right/bottom), and time when ``temporal``: the keyframe
    half keeps the first frame of each pair, the motion half convolves each pair (kernel 2, stride 2). The clip's
    first frame stays alone, so ``1 + 2k`` frames become ``1 + k``."""

    def __init__(self, half: int, temporal: bool, split: bool = True) -> None:
        super().__init__()
        self.split = split
        if split:
            self.conv_2d = nn.Conv2d(half, half, 3, stride=2)
            self.conv_3d = nn.Conv2d(half, half, 3, stride=2)
        else:  # the ablation without keyframe compression: one stream, every channel convolved in time
            self.conv = nn.Conv2d(2 * half, 2 * half, 3, stride=2)
        t_channels = half if split else 2 * half
        self.time_conv = nn.Conv3d(t_channels, t_channels, (2, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.split:
            key, motion = x.chunk(2, dim=1)
            key = per_frame(self.conv_2d, F.pad(key, (0, 1, 0, 1)))
            motion = per_frame(self.conv_3d, F.pad(motion, (0, 1, 0, 1)))
        else:
            key, motion = None, per_frame(self.conv, F.pad(x, (0, 1, 0, 1)))
        if self.time_conv is None:
            return motion if key is None else torch.cat([key, motion], dim=1)
        start = 1 if state is None or state.first_call(self) else 0  # the clip's first frame passes alone
        t = motion.shape[2]
        if (t - start) % 2:
            raise ValueError(f"temporal downsampling needs pairs of frames after the first, got {t}")
        parts = [motion[:, :, :start]]
        if t > start:
            parts.append(self.time_conv(motion[:, :, start:]))
        motion = torch.cat(parts, dim=2)
        if key is None:
            return motion
        return torch.cat([torch.cat([key[:, :, :start], key[:, :, start::2]], dim=2), motion], dim=1)


class Upsample(nn.Module):
    """Double time when ``temporal`` (except for the clip's first frame: ``1 + k`` frames become ``1 + 2k``): the
    keyframe half repeats each frame, the motion half predicts two frames per frame (a 1x1x1 conv to twice the
    channels, interleaved). Then double H and W of each half (nearest + 3x3 conv), halving each half's width."""

    def __init__(self, half: int, temporal: bool, split: bool = True) -> None:
        super().__init__()
        self.split = split
        t_channels = half if split else 2 * half
        self.time_conv = nn.Conv3d(t_channels, 2 * t_channels, 1) if temporal else None
        if split:
            self.conv_2d = nn.Conv2d(half, half // 2, 3, padding=1)
            self.conv_3d = nn.Conv2d(half, half // 2, 3, padding=1)
        else:  # the ablation without keyframe compression: one stream
            self.conv = nn.Conv2d(2 * half, half, 3, padding=1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        key, motion = x.chunk(2, dim=1) if self.split else (None, x)
        start = 1 if self.time_conv is None or state is None or state.first_call(self) else 0
        if self.time_conv is not None and motion.shape[2] > start:  # the clip's first frame stays single
            b, c, t, h, w = motion.shape
            pairs = self.time_conv(motion[:, :, start:]).reshape(b, 2, c, t - start, h, w)  # [even | odd] frames
            motion_up = torch.stack([pairs[:, 0], pairs[:, 1]], dim=3).reshape(b, c, 2 * (t - start), h, w)
            motion = torch.cat([motion[:, :, :start], motion_up], dim=2)
            if key is not None:
                key = torch.cat([key[:, :, :start], key[:, :, start:].repeat_interleave(2, dim=2)], dim=2)
        up = {"scale_factor": 2.0, "mode": "nearest"}
        if key is None:
            return per_frame(lambda f: self.conv(F.interpolate(f, **up)), motion)
        key = per_frame(lambda f: self.conv_2d(F.interpolate(f, **up)), key)
        motion = per_frame(lambda f: self.conv_3d(F.interpolate(f, **up)), motion)
        return torch.cat([key, motion], dim=1)


class AtrousHead(nn.Module):
    """The encoder's output: parallel per-frame convolutions (1x1, 3x3, and 3x3 with dilations 3, 6, 9, 12), each
    to ``[key | motion]`` of ``out_half`` channels, concatenated half by half and fused by a 1x1 conv."""

    DILATIONS = (3, 6, 9, 12)

    def __init__(self, in_channels: int, out_half: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [FrameConv(in_channels, 2 * out_half, 1), FrameConv(in_channels, 2 * out_half, 3)]
            + [FrameConv(in_channels, 2 * out_half, 3, dilation=d) for d in self.DILATIONS]
        )
        self.fuse = FrameConv(12 * out_half, 2 * out_half, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]  # each (B, 2*out_half, T, H, W)
        keys = [o.chunk(2, dim=1)[0] for o in outs]
        motions = [o.chunk(2, dim=1)[1] for o in outs]
        return self.fuse(torch.cat(keys + motions, dim=1))
