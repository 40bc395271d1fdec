"""The layers of the Wan VAEs, causal in time and streamable.

Every layer takes ``x`` of layout ``(B, C, T, H, W)`` and an optional ``StreamState``. Without one, ``x`` is a
whole clip; with one, it is the next chunk of a clip (the first chunk of a stream holds the clip's first frame),
and the layer keeps in the state what the next chunk needs, so that chunked outputs concatenate to the one-pass
output. Module and parameter names follow diffusers' ``AutoencoderKLWan`` (``norm1.gamma``, ``resample.1``,
``time_conv``, ...): they are the keys of the weight files this family loads.

Wan codes the first frame of a clip on its own, and some layers treat it specially (the original code does so
through its per-chunk cache); written as whole-clip operations:

- temporal downsampling keeps frame 0 as is and convolves (kernel 3, stride 2, no padding) the clip from frame 0:
  ``[f0, conv(f0, f1, f2), conv(f2, f3, f4), ...]``;
- temporal upsampling passes frame 0 through and applies its causal conv (zero past) to frames ``1..``, each
  giving two frames;
- Wan2.2's average-pool shortcut pads one zero frame before frame 0, its duplication shortcut drops the first
  duplicate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.causal_conv import CausalConv3d, StreamState, cpu_inference_dtype
from pvvae_cli.models.checkpointing import GradCheckpointing


def _first(module: nn.Module, state: StreamState | None) -> bool:
    """Whether ``module`` sees the clip's first frame now: always in one pass, on the first call of a stream."""
    return state is None or state.first_call(module)


class WanRMSNorm(nn.Module):
    """L2 normalisation over channels times ``sqrt(C)`` and a learned gain (RMS norm without epsilon).

    ``gamma`` is ``(C, 1, 1, 1)`` for video activations and ``(C, 1, 1)`` for the attention's per-frame images:
    the shapes of Wan's weights."""

    def __init__(self, channels: int, images: bool = False) -> None:
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1) if images else torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The statistic is computed in fp32 for low-precision inputs (a bf16 sum of squares over hundreds of
        # channels loses too much); F.normalize divides by max(norm, 1e-12), as Wan does.
        y = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=1).to(x.dtype)
        return y * (self.scale * self.gamma.to(x.dtype))


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal 3x3x3 conv, twice, plus a (1x1x1 conv) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = WanRMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = WanRMSNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.conv_shortcut = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.conv1(F.silu(self.norm1(x)), state)
        h = self.conv2(F.silu(self.norm2(h)), state)
        return h + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the positions of each frame separately (so causal by construction)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = WanRMSNorm(channels, images=True)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C, H, W)
        q, k, v = self.to_qkv(y).flatten(2).transpose(1, 2).unsqueeze(1).chunk(3, dim=-1)  # (B*T, 1, HW, C) each
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        y = self.proj(y)
        return x + y.reshape(b, t, c, h, w).transpose(1, 2)


class MidBlock(nn.Module):
    """Residual block, attention, residual block (``resnets.{0,1}``, ``attentions.0``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResidualBlock(channels, channels), ResidualBlock(channels, channels)])
        self.attentions = nn.ModuleList([AttentionBlock(channels)])

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.resnets[0](x, state)
        x = self.attentions[0](x)
        return self.resnets[1](x, state)


def frame_conv(conv: nn.Conv2d, x: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Apply the 2-D ``conv`` to every frame of ``x`` ``(B, C, T, H, W)``, as a 3-D conv with a 1-frame kernel
    (no reshape of the activations to ``(B*T, C, H, W)`` and back).

    Inference on the CPU calls oneDNN directly on channels-last activations, as ``CausalConv3d`` does, with the
    parameter itself in fp32 (``WanVAE.channels_last_kernels`` stores it channels-last, so its 5-D view is too) and
    a cached channels-last cast copy in bf16."""
    fast = cpu_inference_dtype(x, conv.weight)
    pad, step = (0, padding, padding), (1, stride, stride)
    if fast is None:
        bias = conv.bias.to(x.dtype) if conv.bias is not None else None
        return F.conv3d(x, conv.weight.to(x.dtype).unsqueeze(2), bias, step, pad)
    w, b = conv.weight, conv.bias
    if fast == w.dtype:
        kernel, bias = w.detach().unsqueeze(2), None if b is None else b.detach()
    else:
        key = (fast, w._version, w.data_ptr(), None if b is None else (b._version, b.data_ptr()))
        cache = conv.__dict__.get("_frame_kernel")
        if cache is None or cache[0] != key:
            kernel = w.detach().unsqueeze(2).to(fast, memory_format=torch.channels_last_3d)
            cache = (key, kernel, None if b is None else b.detach().to(fast))
            conv.__dict__["_frame_kernel"] = cache  # a plain attribute: never part of the state dict
        kernel, bias = cache[1], cache[2]
    x = x.to(fast).contiguous(memory_format=torch.channels_last_3d)
    return torch.ops.aten.mkldnn_convolution(x, kernel, bias, pad, step, (1, 1, 1), 1)


class _Step(nn.Module):
    """A parameter-free first element of ``resample`` (so the conv's keys are ``resample.1.*``, as in Wan)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # not called: Resample applies its steps itself
        return x


class TemporalDownConv(nn.Conv3d):
    """Kernel (3, 1, 1), stride 2 in time, no padding; frame 0 of the clip is passed through unchanged (see the
    module docstring). Streaming keeps the frames from the next output window on."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        head = []
        if _first(self, state):
            head, past = [x[:, :, :1]], None
        else:
            past = state.get(self)
        seq = x if past is None else torch.cat([past, x], dim=2)
        n_out = max((seq.shape[2] - 3) // 2 + 1, 0)
        if state is not None:
            state.set(self, seq[:, :, 2 * n_out :].detach().clone())
        out = head + ([super().forward(seq[:, :, : 2 * n_out + 1])] if n_out else [])
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]


class Resample(nn.Module):
    """Wan's resampling between levels. ``mode``: ``downsample2d`` (stride-2 3x3 conv after padding right and
    bottom by one), ``downsample3d`` (that, then ``TemporalDownConv``), ``upsample2d`` (nearest 2x, then a 3x3
    conv to ``out_channels``), ``upsample3d`` (first a causal temporal conv to two frames per frame, then as
    ``upsample2d``)."""

    MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

    def __init__(self, channels: int, mode: str, out_channels: int | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; use one of {self.MODES}")
        self.mode = mode
        if mode.startswith("down"):
            self.resample = nn.Sequential(_Step(), nn.Conv2d(channels, channels, 3, stride=2))
            self.time_conv = TemporalDownConv(channels) if mode == "downsample3d" else None
        else:
            self.resample = nn.Sequential(_Step(), nn.Conv2d(channels, out_channels or channels, 3, padding=1))
            self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1)) if mode == "upsample3d" else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        conv = self.resample[1]
        if self.mode.startswith("down"):
            x = frame_conv(conv, F.pad(x, (0, 1, 0, 1)), stride=2)  # (B, C, T, H/2, W/2)
            return x if self.time_conv is None else self.time_conv(x, state)
        if self.time_conv is not None:
            x = self._double_frames(x, state)
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (B, C, T, 2H, 2W)
        return frame_conv(conv, x, padding=1)

    def _double_frames(self, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
        """Frames ``1..`` of the clip -> two frames each (channels ``[0, C)`` the even, ``[C, 2C)`` the odd one);
        frame 0 passes through alone."""
        head = []
        if _first(self, state):
            head, x = [x[:, :, :1]], x[:, :, 1:]
        if x.shape[2]:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, state).view(b, 2, c, t, h, w)
            head.append(torch.stack([y[:, 0], y[:, 1]], dim=3).view(b, c, 2 * t, h, w))
        return torch.cat(head, dim=2) if len(head) > 1 else head[0]


class AvgDown(nn.Module):
    """Wan2.2's parameter-free encoder shortcut: space- (and time-) to-channel, then the mean of consecutive
    channel groups, to ``out_channels``. Frame 0 is paired with a zero frame in front of the clip."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if (in_channels * factor) % out_channels:
            raise ValueError(f"AvgDown: {in_channels} channels x {factor} do not split into {out_channels} groups")
        self.out_channels = out_channels
        self.group = in_channels * factor // out_channels

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        if ft > 1 and _first(self, state):
            x = F.pad(x, (0, 0, 0, 0, ft - 1, 0))
        b, c, t, h, w = x.shape
        if t % ft:
            raise ValueError(f"AvgDown: {t} frames after the first do not pair up; chunks must be multiples of {ft}")
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        # (B, C, ft, fs, fs, T', H', W'): channel index c * factor + (dt * fs + dy) * fs + dx, grouped in order
        x = x.reshape(b, self.out_channels, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp(nn.Module):
    """Wan2.2's parameter-free decoder shortcut, the transpose of ``AvgDown``: repeat channels, then channel-to-
    space (and time). The first ``factor_t - 1`` frames of the clip are dropped (frame 0 gives one frame)."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        factor = factor_t * factor_s * factor_s
        if (out_channels * factor) % in_channels:
            raise ValueError(f"DupUp: {out_channels} channels x {factor} are not a multiple of {in_channels}")
        self.out_channels = out_channels
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_channels, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if ft > 1 and _first(self, state) else x


class ResidualDownBlock(GradCheckpointing, nn.Module):
    """Wan2.2 encoder stage: residual blocks and the stage's ``Resample``, plus an ``AvgDown`` shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, temporal: bool, down: bool) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown(in_channels, out_channels, 2 if temporal else 1, 2 if down else 1)
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)])
        self.downsampler = Resample(out_channels, "downsample3d" if temporal else "downsample2d") if down else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        skip = self.avg_shortcut(x, state)
        for block in self.resnets:
            x = self.run_block(block, x, state=state)  # checkpointed in training when switched on
        if self.downsampler is not None:
            x = self.downsampler(x, state)
        return x + skip


class UpBlock(GradCheckpointing, nn.Module):
    """Wan2.1 decoder level: ``num_blocks`` residual blocks, then (``upsamplers.0``) its ``Resample``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, mode: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)])
        # Wan2.1 halves the channels in the upsampling conv; the next level starts from that.
        self.upsamplers = nn.ModuleList([Resample(out_channels, mode, out_channels // 2)]) if mode else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        for block in self.resnets:
            x = self.run_block(block, x, state=state)  # checkpointed in training when switched on
        return x if self.upsamplers is None else self.upsamplers[0](x, state)


class ResidualUpBlock(GradCheckpointing, nn.Module):
    """Wan2.2 decoder level: residual blocks and the level's ``Resample``, plus a ``DupUp`` shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, temporal: bool, up: bool) -> None:
        super().__init__()
        self.avg_shortcut = DupUp(in_channels, out_channels, 2 if temporal else 1, 2) if up else None
        self.resnets = nn.ModuleList(
            [ResidualBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)])
        mode = "upsample3d" if temporal else "upsample2d"
        self.upsampler = Resample(out_channels, mode, out_channels) if up else None

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        skip = None if self.avg_shortcut is None else self.avg_shortcut(x, state)
        for block in self.resnets:
            x = self.run_block(block, x, state=state)  # checkpointed in training when switched on
        if self.upsampler is not None:
            x = self.upsampler(x, state)
        return x if skip is None else x + skip
