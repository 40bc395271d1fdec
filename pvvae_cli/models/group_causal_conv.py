"""Group causal convolution (GCConv, IV-VAE §3): two-sided inside a group of frames, causal between groups.

Layout ``(B, C, T, H, W)``. A clip at a level with group size ``g`` has ``T = 1 + g*n`` frames: the first frame
alone, then ``n`` groups of ``g``. Each group is convolved with a temporal window of 3 on ``[lead, group, 0]``:
``lead`` is the last real frame of the previous group (for the first group, the first frame), the trailing pad is
zero. Frames of a group therefore see each other both ways, while no group sees a later one: the latents of
earlier groups never change when later frames do. The first frame is convolved as ``[x0, x0, 0]`` (an image sees
itself as its own past, as in the reference code).

Streaming: a chunk after the first continues the clip; its first group's ``lead`` is the previous chunk's last
frame, kept in the ``StreamState``. Chunk lengths after the first must be multiples of ``g``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pvvae_cli.models.causal_conv import CausalConv3d, StreamState


class GroupCausalConv3d(CausalConv3d):
    """A 3-D convolution (temporal kernel 3 or 1, stride 1) with group causal temporal padding.

    Subclassing keeps the state-dict keys standard (``weight``, ``bias``; temporal taps: previous, current,
    next) and reuses ``CausalConv3d``'s convolution call (oneDNN directly for CPU inference, channels-last). A
    temporal kernel of 1 is a plain per-frame convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3,
                 group: int = 4, bias: bool = True) -> None:
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        if k[0] not in (1, 3):
            raise ValueError(f"GroupCausalConv3d supports temporal kernels 1 and 3, got {k[0]}")
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        super().__init__(in_channels, out_channels, k, bias=bias)  # spatial padding k // 2, no temporal padding
        self.group = group

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:  # (B, C, T, H, W)
        if self.kernel_size[0] == 1:
            return self._conv(x, self._cpu_inference_dtype(x))
        prev = state.get(self) if state is not None else None
        outputs = []
        if prev is None:  # the clip's first frame, padded [x0, x0, 0]: one window, i.e. a 2-D conv with the
            first = x[:, :, :1]  # previous and current taps summed (a third of the work of convolving the padding)
            weight = self.weight[:, :, :1] + self.weight[:, :, 1:2]
            outputs.append(F.conv3d(first, weight, self.bias, 1, self.padding))
            prev, rest = first, x[:, :, 1:]
        else:
            rest = x
        if rest.shape[2]:
            outputs.append(self._groups(rest, prev))
        if state is not None:
            state.set(self, x[:, :, -1:].detach().clone())
        return torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]

    def _groups(self, x: torch.Tensor, lead: torch.Tensor) -> torch.Tensor:
        """``x``: ``n`` whole groups ``(B, C, n*g, H, W)``; ``lead``: the frame before them ``(B, C, 1, H, W)``."""
        b, c, t, h, w = x.shape
        g = self.group
        if t % g:
            raise ValueError(f"GroupCausalConv3d with group {g} needs a multiple of {g} frames here, got {t}")
        n = t // g
        groups = x.reshape(b, c, n, g, h, w)
        # Each group's lead: the frame before the clip part for group 0, the previous group's last frame otherwise.
        leads = torch.cat([lead, x[:, :, g - 1 :: g][:, :, : n - 1]], dim=2).unsqueeze(3)  # (B, C, n, 1, H, W)
        padded = torch.cat([leads, groups, torch.zeros_like(leads)], dim=3)  # (B, C, n, g+2, H, W)
        padded = padded.transpose(1, 2).reshape(b * n, c, g + 2, h, w)  # groups into the batch
        y = self._conv(padded, self._cpu_inference_dtype(padded))  # (B*n, O, g, H, W)
        o = y.shape[1]
        return y.reshape(b, n, o, g, h, w).transpose(1, 2).reshape(b, o, t, h, w)
