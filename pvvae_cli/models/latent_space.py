"""Family-independent latent-space rules: per-channel normalisation and the padding latents that predictive
training and prediction append for frames not observed. Latents ``(B, C, t, h, w)``."""

from __future__ import annotations

import torch


def pad_latents(z: torch.Tensor, num_frames: int, mode: str, token: torch.Tensor | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Append ``num_frames`` padding latent frames to ``z`` along time: the learned per-channel ``token``
    (``learnable``) or N(0, I) samples (``gaussian``)."""
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if num_frames == 0:
        return z
    b, c, _, h, w = z.shape
    if mode == "learnable":
        if token is None:
            raise ValueError("this model has no learned padding tokens (trained with gaussian padding); "
                             "use gaussian padding")
        pad = token.to(z.dtype).view(1, c, 1, 1, 1).expand(b, c, num_frames, h, w)
    elif mode == "gaussian":
        pad = torch.randn((b, c, num_frames, h, w), generator=generator, device=z.device, dtype=z.dtype)
    else:
        raise ValueError(f"unknown padding mode {mode!r}; use learnable or gaussian")
    return torch.cat([z, pad], dim=2)


def _stats(config, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    if config.latents_mean is None:
        return None
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(config.latents_mean, device=z.device, dtype=z.dtype).view(shape)
    std = torch.tensor(config.latents_std, device=z.device, dtype=z.dtype).view(shape)
    return mean, std


def normalize_latents(config, z: torch.Tensor) -> torch.Tensor:
    """Raw latents -> ``(z - mean) / std`` with ``config``'s per-channel statistics (identity without them)."""
    stats = _stats(config, z)
    return z if stats is None else (z - stats[0]) / stats[1]


def denormalize_latents(config, z: torch.Tensor) -> torch.Tensor:
    """The inverse of ``normalize_latents``."""
    stats = _stats(config, z)
    return z if stats is None else z * stats[1] + stats[0]
