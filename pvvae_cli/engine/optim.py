"""The optimiser of every run (VAE and gen): AdamW over two parameter groups, and its learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base lr at update ``step``: linear warm-up, then cosine from 1 down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw(params: Sequence[nn.Parameter], lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
          decay_all: bool = False) -> torch.optim.AdamW:
    """AdamW over ``params``: weight decay on matrices and kernels only (norms, biases, single tokens have
    ``ndim < 2`` and are left undecayed) unless ``decay_all``. Fused (one kernel for the whole step) when every
    parameter is on CUDA; the default foreach implementation elsewhere (fused CPU AdamW gives different rounding
    and no speed-up at these sizes)."""
    params = list(params)
    if decay_all:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    fused = bool(params) and all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True if fused else None)


def warmup_cosine(opt: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    """``lr_factor`` as a scheduler of ``opt`` (stepped once per optimiser update)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, min_ratio))
