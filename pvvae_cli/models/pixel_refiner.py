"""``PixelRefiner``: a small residual post-filter on a decoder's output pixels, group causal in time.

``x + out(h)``, ``h`` a stack of ``silu`` conv layers on ``x`` at full resolution: a correction computed from the
pixels themselves, which is what a decoder on top of a block code needs and what its deep upsampling path does not
learn in a CPU budget (``benchmarks/exp_refiner.py``: on block-PCA reconstructions of held-out clips this head gains
~0.2 dB within 300 steps while the decoder's own path, given the same steps and the linear reconstruction as an
input, stays flat). Its convolutions are group causal (``group_causal_conv``) with the model's temporal factor as
the group: the frames of one latent group see each other both ways (they come from the same latent, and the block
code's error is shared across them; a strictly causal head gains a third as much), and no group sees a later one,
so chunked decoding stays exact.

The output convolution starts at zero (the head starts as the identity); the others keep PyTorch's default
initialisation, whose random features are what the output layer learns from at once.

Layout: ``(B, 3, 1 + g*n, H, W)`` -> same; values as the decoder's (nominally [-1, 1], not clamped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.causal_conv import StreamState
from pvvae_cli.models.group_causal_conv import GroupCausalConv3d


class PixelRefiner(nn.Module):
    def __init__(self, channels: int, blocks: int, group: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = GroupCausalConv3d(in_channels, channels, 3, group)
        self.body = nn.ModuleList([GroupCausalConv3d(channels, channels, 3, group) for _ in range(blocks)])
        self.conv_out = GroupCausalConv3d(channels, in_channels, 3, group)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init everywhere, the output conv at zero (see the module docstring)."""
        for conv in (self.conv_in, *self.body, self.conv_out):
            if not conv.weight.is_meta:
                conv.reset_parameters()
        if not self.conv_out.weight.is_meta:
            with torch.no_grad():
                self.conv_out.weight.zero_()
                self.conv_out.bias.zero_()

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        h = F.silu(self.conv_in(x, state))
        for conv in self.body:
            h = h + F.silu(conv(h, state))
        return x + self.conv_out(h, state).to(x.dtype)
