"""Diagonal Gaussian posterior returned by ``VideoVAE.encode``."""

from __future__ import annotations

import torch


class DiagonalGaussian:
    """N(mean, exp(logvar)) over latents of layout ``(B, C, t, h, w)``."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean
        # Clamped so exp() can neither overflow nor collapse to an exact zero variance.
        self.logvar = logvar.clamp(-30.0, 20.0)

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over ``(C, t, h, w)``: shape ``(B,)``."""
        var = torch.exp(self.logvar)
        return 0.5 * (self.mean.pow(2) + var - 1.0 - self.logvar).flatten(1).sum(dim=1)
