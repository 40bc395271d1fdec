"""ST-LPIPS (alex): the shift-tolerant LPIPS of Ghildyal & Liu (ECCV 2022), as a pure PyTorch module.

A blur-pooled AlexNet trunk (stride-1 first conv, every downsampling a reflect-padded [1, 2, 1]^2 blur with
stride 2 after the max pool) whose five ReLU outputs are unit-normalised over channels, differenced, squared,
weighted by the learned 1x1 "lin" heads, averaged over space and summed over layers: the LPIPS v0.1 formula
(including its input scaling layer) on a different trunk. The weights (trunk and heads, 2.47 M parameters) are
``alex_shift_tolerant.pth`` of the ``stlpips-pytorch`` 0.0.2 wheel (BSD-2-Clause), trained on the LPIPS
perceptual-similarity data; ``pvvae setup-metrics`` converts them to ``stlpips_alex.safetensors`` with the key
names of this module (``metrics.network_setup``).

It is **not** LPIPS: the trunk differs, so its values are on another scale than published LPIPS numbers and must
be reported under their own name, "ST-LPIPS (alex)".

Inputs are images ``(N, 3, H, W)`` in [-1, 1], at least ``MIN_SIZE`` pixels on each side (the reflection pads
need it); the output is the distance per image ``(N,)`` (0 for identical images). Parameters are frozen; gradients
flow to the inputs, so it doubles as a training loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)  # the five ReLU outputs the distance compares
MIN_SIZE = 21  # smallest side for which every reflection pad of the trunk is smaller than its input (measured)
# LPIPS v0.1's ScalingLayer: maps [-1, 1] to roughly ImageNet-normalised inputs. Identical to the values in the
# package's weight file (conversion checks that).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling (Zhang 2019, "pad_more" variant): reflect-pad 2 on every side, then a
    depthwise [1, 2, 1] x [1, 2, 1] / 16 blur with stride 2. Fixed filter, so no parameters."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (taps[:, None] * taps[None, :] / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt.to(x.dtype).expand(c, 1, 3, 3),
                        stride=2, groups=c)


class ShiftTolerantAlexNet(nn.Module):
    """The blur-pooled AlexNet trunk; ``forward`` returns the five ReLU feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 11, stride=1, padding=2)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)
        self.down = BlurDownsample()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The package blurs *before* the first ReLU (its variant "blurAfter" the stride-1 conv), then the others
        # after max pooling with stride 1: max-pool-then-blur is the anti-aliased form of a strided max pool.
        h1 = F.relu(self.down(self.conv1(x)))
        h2 = F.relu(self.conv2(self.down(F.max_pool2d(h1, 3, stride=1))))
        h3 = F.relu(self.conv3(self.down(F.max_pool2d(h2, 3, stride=1))))
        h4 = F.relu(self.conv4(h3))
        h5 = F.relu(self.conv5(h4))
        return [h1, h2, h3, h4, h5]


class STLPIPS(nn.Module):
    """ST-LPIPS (alex): images ``(N, 3, H, W)`` in [-1, 1] (H, W >= ``MIN_SIZE``) -> distance ``(N,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = ShiftTolerantAlexNet()
        # The learned per-channel weights of each layer's squared difference (LPIPS' 1x1 "lin" convs, no bias).
        self.lin = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-layer contributions ``(N, 5)``; their sum over layers is the distance."""
        if x.shape != y.shape:
            raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ST-LPIPS takes images (N, 3, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"ST-LPIPS needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}")
        n = x.shape[0]
        # One trunk pass over both images (half the Python overhead of two).
        feats = self.trunk((torch.cat([x, y]) - self.shift) / self.scale)
        out = []
        for f, w in zip(feats, self.lin, strict=True):
            # vector_norm instead of sqrt(sum(f^2)): same value, but a zero gradient (not NaN) where a feature
            # vector is exactly zero, which happens after ReLU and matters when this is a training loss.
            f = f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10)
            d = (f[:n] - f[n:]).square()
            out.append((d * w).sum(1).mean((1, 2)))
        return torch.stack(out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.layer_distances(x, y).sum(1)


def load_stlpips(path: str | Path, device: str | torch.device = "cpu") -> STLPIPS:
    """``STLPIPS`` from a converted ``stlpips_alex.safetensors`` (every key required), in eval mode, frozen."""
    from safetensors.torch import load_file

    model = STLPIPS()
    state = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} is not an ST-LPIPS (alex) weight file: missing keys {missing}, "
                         f"unexpected keys {unexpected}; rerun `pvvae setup-metrics`")
    return model.to(device).eval().requires_grad_(False)
