"""The one square resize-and-crop of clips, shared by training (random crops), evaluation and prediction (centred).

Pixels are float ``(3, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_crop(x: torch.Tensor, size: int, rng: np.random.Generator | None = None, short_side: int | None = None
                ) -> torch.Tensor:
    """``(3, T, H, W)`` in [-1, 1] -> ``(3, T, size, size)``: short side resized to ``short_side`` (default
    ``size``; bilinear, antialiased when shrinking), then a square crop, random when ``rng`` is given (training),
    centred otherwise (evaluation). A ``short_side`` above ``size`` crops a part of the frame at a finer scale."""
    _, _, h, w = x.shape
    scale = max(short_side or size, size) / min(h, w)
    if scale != 1.0:
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        # (T, 3, H, W) so time is the batch axis; antialias avoids aliasing when shrinking.
        x = F.interpolate(x.transpose(0, 1), size=(nh, nw), mode="bilinear", antialias=scale < 1,
                          align_corners=False).transpose(0, 1)
        h, w = nh, nw
    if rng is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return x[:, :, top : top + size, left : left + size].clamp(-1.0, 1.0).contiguous()
