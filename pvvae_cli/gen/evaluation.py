"""Cheap, always-available measures of how close ``gen`` samples are to the training latents, and the hook type
through which richer evaluations (FVD/KVD on decoded videos, from ``pvvae_cli.metrics``) plug into training.

All distances are in the model's normalised latent space (per-channel standardised), as RMS over the elements of
one clip: ``sqrt(mean((a - b)^2))``. ``nn_dist`` is the mean over samples of the distance to the nearest reference
latent; pure N(0, I) noise scored the same way is the reference a model must beat. With labels, ``nn_class_acc``
is the fraction of samples whose nearest reference latent has the class they were asked for (chance = 1/K).

The reference is the training set, or a fixed seeded subsample of ``MAX_REFERENCE`` clips of it when it is larger
(``reference_indices``; the number is logged as ``reference_clips``): the cost of an evaluation does not grow with
the set. Distances are computed in float32 on the model's device, a bounded chunk of reference clips at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pvvae_cli.gen.data import LatentSet
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.sampler import euler_sample, initial_noise

# An evaluation run during training: (the model to score (EMA weights when on), step) -> numbers to log.
# Example: sample a fixed-seed batch, decode it with the VAE and return {"fvd": ..., "kvd": ...}.
EvalHook = Callable[[LatteDiT, int], dict[str, float]]

MAX_REFERENCE = 10_000  # reference clips that samples are compared with, at most
# Reference elements per chunk on the device (128 MiB in float32): bounds the memory of the distance pass.
CHUNK_ELEMENTS = 1 << 25


class LazyHook:
    """An ``EvalHook`` whose parts are built at its first call, by ``build(model)``, on the device of the model it
    scores. The trainer calls hooks on the main process only, so under torchrun only rank 0 ever builds (loads
    networks, reads reference clips, holds their features); checks that must fail before training belong before
    the ``LazyHook`` is made. Building leaves the global random state as it was (a ``preset:`` VAE draws its
    weights from it) and runs outside autocast (reference features in float32, as the data they describe)."""

    def __init__(self, build: Callable[[LatteDiT], EvalHook]) -> None:
        self.build = build
        self.hook: EvalHook | None = None

    def __call__(self, model: LatteDiT, step: int) -> dict[str, float]:
        if self.hook is None:
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[]), torch.autocast(device.type, enabled=False):
                self.hook = self.build(model)
        return self.hook(model, step)


def reference_indices(n: int, max_reference: int = MAX_REFERENCE, seed: int = 0) -> torch.Tensor:
    """The clips (int64 ``(M,)``, ascending, ``M = min(n, max_reference)``) that samples are compared with: all
    ``n`` when they are few enough, else a subsample without repeats fixed by ``seed`` (the same at every
    evaluation, so the curves are comparable)."""
    if max_reference < 1:
        raise ValueError(f"max_reference must be >= 1, got {max_reference}")
    if n <= max_reference:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_reference].sort().values


@torch.no_grad()
def sample_statistics(model: LatteDiT, data: torch.Tensor | LatentSet, labels: torch.Tensor | None, num: int,
                      steps: int, seed: int, cfg_scale: float = 1.0, max_reference: int = MAX_REFERENCE
                      ) -> dict[str, float]:
    """Sample ``num`` clips (fixed ``seed``; classes cycling 0..K-1 for a conditional model) and compare them with
    the training latents ``data``: normalised ``(N, C, t, h, w)``, or a ``LatentSet`` (stored latents, normalised
    here a chunk at a time with the model's statistics, so the set is never copied). The reference is
    ``reference_indices(N, max_reference, seed)``. Returns ``nn_dist``, ``noise_nn_dist`` (the same for the starting
    noise), ``mean_err``/``std_err`` (RMS over channels of the per-channel mean / std differences, samples against
    the reference), ``reference_clips`` and, with ``labels`` (``(N,)``), ``nn_class_acc``."""
    device = next(model.parameters()).device
    if isinstance(data, LatentSet):
        shape, n = data.shape, len(data)

        def rows(i: torch.Tensor) -> torch.Tensor:
            return data.batch(i, model.config)
    else:
        shape, n = tuple(data.shape[1:]), data.shape[0]

        def rows(i: torch.Tensor) -> torch.Tensor:
            return data[i].float()

    noise = initial_noise((num, *shape), seed).to(device)
    y = None
    if model.config.conditional:
        y = torch.arange(num) % model.config.num_classes
    z = euler_sample(model, noise, steps, None if y is None else y.to(device), cfg_scale, model.null_class)
    ref = reference_indices(n, max_reference, seed)
    with torch.autocast(device.type, enabled=False):  # distances in float32 even inside the trainer's autocast
        dist, idx, (m_d, s_d) = _nearest(torch.cat([z, noise]), rows, ref)
    dist, idx = dist.cpu(), idx.cpu()

    flat = z.transpose(0, 1).flatten(1)  # (C, num*t*h*w)
    m_s, s_s = flat.mean(1).double(), flat.std(1).double()
    out = {"nn_dist": float(dist[:num].mean()), "noise_nn_dist": float(dist[num:].mean()),
           "mean_err": float((m_s - m_d).pow(2).mean().sqrt()), "std_err": float((s_s - s_d).pow(2).mean().sqrt()),
           "reference_clips": float(len(ref))}
    if labels is not None and y is not None:
        out["nn_class_acc"] = float((labels[idx[:num]] == y).float().mean())
    return out


def _nearest(samples: torch.Tensor, rows: Callable[[torch.Tensor], torch.Tensor], ref: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """For each of ``samples`` ``(S, C, t, h, w)`` (on the device that computes): the RMS distance (float32 ``(S,)``)
    to its nearest reference clip and that clip's index (int64 ``(S,)``, an entry of ``ref``), plus the per-channel
    mean and (unbiased) std (float64 ``(C,)``) of the reference. ``rows(i)`` gives the reference clips ``i``; they
    go to the device ``CHUNK_ELEMENTS`` elements at a time."""
    device = samples.device
    s = samples.flatten(1).float()  # (S, D)
    per_clip = s.shape[1]
    c = samples.shape[1]
    best = torch.full((s.shape[0],), float("inf"), device=device)
    best_idx = torch.zeros(s.shape[0], dtype=torch.long, device=device)
    total = torch.zeros(c, dtype=torch.float64, device=device)
    squares = torch.zeros(c, dtype=torch.float64, device=device)
    for chunk in ref.split(max(1, CHUNK_ELEMENTS // per_clip)):
        x = rows(chunk).to(device, torch.float32)  # (R, C, t, h, w)
        d, j = torch.cdist(s, x.flatten(1)).min(1)  # (S,) nearest within the chunk
        better = d < best  # strict: the earlier clip keeps a tie, as one pass over all clips would
        best = torch.where(better, d, best)
        best_idx = torch.where(better, chunk.to(device)[j], best_idx)
        total += x.sum((0, 2, 3, 4), dtype=torch.float64)
        squares += x.square().sum((0, 2, 3, 4), dtype=torch.float64)
    count = len(ref) * per_clip // c  # values per channel
    mean = total / count
    std = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_min(0).sqrt()
    return best / per_clip**0.5, best_idx, (mean.cpu(), std.cpu())


@torch.no_grad()
def flow_losses(model: LatteDiT, data: torch.Tensor, labels: torch.Tensor | None, seed: int = 0,
                repeats: int = 8) -> dict[str, float]:
    """The model's rectified-flow loss on ``data`` (normalised ``(N, C, t, h, w)``) over ``repeats`` fixed draws of
    ``(t, noise)`` per clip (logit-normal t, no label dropout), next to the loss of the best input-blind
    predictor, the mean velocity ``E[eps - x0]`` over the same draws (``mean_velocity_loss``): a model that
    learned nothing about its input scores no better than that."""
    from pvvae_cli.gen.flow import flow_loss, sample_time, velocity_target

    device = next(model.parameters()).device
    x0 = data.repeat(repeats, 1, 1, 1, 1).to(device)
    y = None if labels is None else labels.repeat(repeats).to(device)
    g = torch.Generator().manual_seed(seed)
    out = flow_loss(model, x0, y, g)
    g = torch.Generator().manual_seed(seed)  # the same draws again (t, then noise, as flow_loss draws them)
    sample_time(x0.shape[0], g)
    eps = torch.randn(x0.shape, generator=g).to(device)
    target = velocity_target(x0.float(), eps)
    baseline = (target - target.mean(0, keepdim=True)).pow(2).mean()
    return {"loss": float(out.loss), "mean_velocity_loss": float(baseline)}
