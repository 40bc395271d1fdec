"""Cheap, always-available measures of how close ``gen`` samples are to the training latents, and the hook type
through which richer evaluations (FVD/KVD on decoded videos, from ``pvvae_cli.metrics``) plug into training.

All distances are in the model's normalised latent space (per-channel standardised), as RMS over the elements of
one clip: ``sqrt(mean((a - b)^2))``. ``nn_dist`` is the mean over samples of the distance to the nearest training
latent; pure N(0, I) noise scored the same way is the reference a model must beat. With labels, ``nn_class_acc``
is the fraction of samples whose nearest training latent has the class they were asked for (chance = 1/K).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.sampler import euler_sample, initial_noise

# An evaluation run during training: (the model to score (EMA weights when on), step) -> numbers to log.
# Example: sample a fixed-seed batch, decode it with the VAE and return {"fvd": ..., "kvd": ...}.
EvalHook = Callable[[LatteDiT, int], dict[str, float]]


def nearest(samples: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of ``samples`` ``(S, ...)``: the RMS distance to its nearest row of ``data`` ``(N, ...)`` and that
    row's index."""
    d = torch.cdist(samples.flatten(1).double(), data.flatten(1).double()) / samples[0].numel() ** 0.5  # (S, N)
    dist, idx = d.min(1)
    return dist.float(), idx


def sample_statistics(model: LatteDiT, data: torch.Tensor, labels: torch.Tensor | None, num: int, steps: int,
                      seed: int, cfg_scale: float = 1.0) -> dict[str, float]:
    """Sample ``num`` clips (fixed ``seed``; classes cycling 0..K-1 for a conditional model) and compare them with
    ``data`` (normalised training latents ``(N, C, t, h, w)``): ``nn_dist``, ``noise_nn_dist`` (the same for the
    starting noise), ``mean_err``/``std_err`` (RMS over channels of the per-channel mean / std differences)
    and, with ``labels``, ``nn_class_acc``."""
    device = next(model.parameters()).device
    noise = initial_noise((num, *data.shape[1:]), seed)
    y = None
    if model.config.conditional:
        y = torch.arange(num) % model.config.num_classes
    z = euler_sample(model, noise.to(device), steps, None if y is None else y.to(device), cfg_scale,
                     model.null_class).cpu()
    dist, idx = nearest(z, data)
    noise_dist, _ = nearest(noise, data)

    def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.transpose(0, 1).flatten(1)
        return flat.mean(1), flat.std(1)

    (m_s, s_s), (m_d, s_d) = channel_stats(z), channel_stats(data)
    out = {"nn_dist": float(dist.mean()), "noise_nn_dist": float(noise_dist.mean()),
           "mean_err": float((m_s - m_d).pow(2).mean().sqrt()), "std_err": float((s_s - s_d).pow(2).mean().sqrt())}
    if labels is not None and y is not None:
        out["nn_class_acc"] = float((labels[idx] == y).float().mean())
    return out


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
