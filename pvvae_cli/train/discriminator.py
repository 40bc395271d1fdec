"""A 3D patch discriminator for the adversarial loss (PatchGAN in space-time).

Input ``(B, 3, T, H, W)`` in [-1, 1], any ``T >= 1`` (images included); output logits ``(B, 1, t, h, w)``, one
per space-time patch. Each stage halves space with a 3x4x4 convolution and keeps time (padding 1 frame each
side: the discriminator judges a clip as a whole, it need not be causal); GroupNorm instead of BatchNorm, so
the result depends neither on the batch composition nor on the number of DDP ranks.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator3D(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if channels < 4 or num_layers < 1:
            raise ValueError(f"discriminator needs channels >= 4 and num_layers >= 1, got {channels}, {num_layers}")
        self.channels = channels
        self.num_layers = num_layers
        layers: list[nn.Module] = [nn.Conv3d(in_channels, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
                                   nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, num_layers + 1):
            out = channels * min(2**i, 8)
            stride = (1, 1, 1) if i == num_layers else (1, 2, 2)  # last stage keeps the resolution
            layers += [nn.Conv3d(width, out, (3, 4, 4), stride, (1, 1, 1), bias=False),
                       nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv3d(width, 1, (3, 4, 4), 1, (1, 1, 1)))
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> patch logits ``(B, 1, T', H', W')``."""
        if x.ndim != 5:
            raise ValueError(f"discriminator input must be (B, 3, T, H, W), got shape {tuple(x.shape)}")
        return self.net(x)


def _init(module: nn.Module) -> None:
    # The DCGAN/PatchGAN initialisation: small normal weights keep early logits near zero.
    if isinstance(module, nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
