"""Rectified flow: the noising path, the training target, the time distribution and the loss.

Orientation (SD3's and this package's): ``t = 0`` is data and ``t = 1`` is noise,

    x_t = (1 - t) * x0 + t * eps,        velocity  v = dx_t/dt = eps - x0,

so sampling integrates from ``t = 1`` (pure noise) down to ``t = 0``. Open-Sora uses the opposite orientation
(``t = 1`` data, target ``x0 - eps``): a model trained with one convention is wrong with the other, which is why
it is written down once, here. ``t`` is drawn from a logit-normal distribution (``sigmoid(N(m, s))``, SD3's default
``m = 0, s = 1``), optionally shifted towards noise by ``shift(t) = s t / (1 + (s - 1) t)`` (SD3's resolution
shift; ``s = 1`` is the identity). The model is an argument; nothing here knows its architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

NUM_T_BINS = 10  # the loss is also reported per t in [0, 0.1), [0.1, 0.2), ... as a diagnostic

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 - t) x0 + t eps`` with ``t`` ``(B,)`` broadcast over the other axes."""
    t = t.reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``d x_t / d t = eps - x0`` (points from data to noise)."""
    return eps - x0


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """``s t / (1 + (s - 1) t)``: maps [0, 1] onto itself, pushing times towards noise for ``s > 1``."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_time(n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0, shift: float = 1.0,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` float32 times from the (shifted) logit-normal distribution, drawn with ``generator``."""
    u = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float32) * std + mean
    return shift_time(torch.sigmoid(u), shift).to(device)


@dataclass
class FlowLoss:
    loss: torch.Tensor  # scalar: the mean squared velocity error
    per_sample: torch.Tensor  # (B,) float32, detached: the error of each sample (for the per-t-bin diagnostic)
    t: torch.Tensor  # (B,) the times used


def flow_loss(model: Model, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator,
              t_mean: float = 0.0, t_std: float = 1.0, shift: float = 1.0, label_dropout: float = 0.0,
              null_class: int = 0) -> FlowLoss:
    """The rectified-flow training loss of ``model`` on clean latents ``x0`` ``(B, C, t, h, w)``.

    Draws ``t``, the noise and (for a class-conditional model) which labels are replaced by ``null_class`` (with
    probability ``label_dropout``, for classifier-free guidance) from ``generator``, so a run's draws are one
    reproducible stream. The squared error is computed in float32."""
    b, gen = x0.shape[0], generator
    t = sample_time(b, gen, t_mean, t_std, shift, x0.device)
    eps = torch.randn(x0.shape, generator=gen, device=gen.device, dtype=torch.float32).to(x0.device)
    if y is not None and label_dropout > 0:
        drop = torch.rand(b, generator=gen, device=gen.device).to(x0.device) < label_dropout
        y = torch.where(drop, torch.full_like(y, null_class), y)
    x_t = interpolate(x0.float(), eps, t)
    pred = model(x_t, t, y)
    err = (pred.float() - velocity_target(x0.float(), eps)).pow(2).flatten(1).mean(1)  # (B,)
    return FlowLoss(err.mean(), err.detach(), t)


def loss_by_t_bin(per_sample: torch.Tensor, t: torch.Tensor, bins: int = NUM_T_BINS) -> dict[str, torch.Tensor]:
    """``{"loss_t0_sum": ..., "loss_t0_n": ..., ...}``: the summed loss and the sample count of each t bin, as
    device scalars (sums, so a log interval can pool several steps and ranks before dividing; no host sync)."""
    idx = (t.detach().float().clamp(0, 1 - 1e-6) * bins).long()
    onehot = torch.nn.functional.one_hot(idx, bins).to(per_sample.device, torch.float32)  # (B, bins)
    sums = per_sample.detach().float() @ onehot
    counts = onehot.sum(0)
    out = {}
    for k in range(bins):
        out[f"loss_t{k}_sum"], out[f"loss_t{k}_n"] = sums[k], counts[k]
    return out


def t_bin_means(record: dict[str, float], bins: int = NUM_T_BINS) -> dict[str, float]:
    """A logged record with each bin's pooled ``_sum``/``_n`` replaced by its mean loss ``loss_tK`` (absent when no
    sample of the interval fell in the bin)."""
    out = {k: v for k, v in record.items() if not (k.startswith("loss_t") and k.endswith(("_sum", "_n")))}
    for k in range(bins):
        n = record.get(f"loss_t{k}_n", 0.0)
        if n > 0:
            out[f"loss_t{k}"] = record[f"loss_t{k}_sum"] / n
    return out
