"""A linear block codec beside a causal video autoencoder: the path that lets training start at the best linear code.

Every ``(3, tc, s, s)`` block of pixels (the clip's first frame: a ``(3, 1, s, s)`` block of its own, as the causal
VAEs treat it) maps linearly to the ``C`` latent numbers of its latent position, and back. Fitted by PCA on training
clips (``init_from_pca``), the pair *is* the block-PCA codec of ``eval.baselines``, so a model whose nonlinear
branches start at zero starts at the PCA floor and learns only what a linear code cannot do.

Layouts: pixels ``(B, 3, T, H, W)`` with ``H, W`` multiples of ``s``; latents ``(B, C, t, H/s, W/s)``. Streaming
follows the models' rule (the first chunk of a stream is the first frame, later chunks whole groups of ``tc``
frames); a block never spans two chunks, so no cache is needed beyond "has the stream started".
"""

from __future__ import annotations

import torch
from torch import nn

from pvvae_cli.models.causal_conv import StreamState


def to_blocks(x: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """``(B, C, n*t, H, W)`` -> ``(B, n, H/s, W/s, C*t*s*s)``: one row per block, in latent order."""
    b, c, tt, h, w = x.shape
    x = x.reshape(b, c, tt // t, t, h // s, s, w // s, s).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, tt // t, h // s, w // s, c * t * s * s)


def from_blocks(rows: torch.Tensor, channels: int, t: int, s: int) -> torch.Tensor:
    """The inverse of ``to_blocks``: ``(B, n, h, w, C*t*s*s)`` -> ``(B, C, n*t, h*s, w*s)``."""
    b, n, h, w, _ = rows.shape
    x = rows.reshape(b, n, h, w, channels, t, s, s).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, channels, n * t, h * s, w * s)


class _BlockLinear(nn.Module):
    """The per-block linear maps of one direction: one for the first frame's blocks, one for later groups."""

    def __init__(self, latent_channels: int, tc: int, s: int, encode: bool, in_channels: int = 3) -> None:
        super().__init__()
        self.tc, self.s, self.c, self.encode = tc, s, in_channels, encode
        d0, d = in_channels * s * s, in_channels * tc * s * s
        shape = (lambda dim: (latent_channels, dim)) if encode else (lambda dim: (dim, latent_channels))
        self.first = nn.Parameter(torch.zeros(shape(d0)))
        self.rest = nn.Parameter(torch.zeros(shape(d)))
        self.first_mean = nn.Parameter(torch.zeros(d0))  # the block mean PCA subtracts (encode) / adds (decode)
        self.rest_mean = nn.Parameter(torch.zeros(d))

    def _starts(self, state: StreamState | None) -> bool:
        return state is None or state.first_call(self)


class BlockEncoder(_BlockLinear):
    """Pixels -> the linear part of the posterior mean: ``(B, 3, T, H, W)`` -> ``(B, C, t, H/s, W/s)``."""

    def __init__(self, latent_channels: int, tc: int, s: int) -> None:
        super().__init__(latent_channels, tc, s, encode=True)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        parts = []
        if self._starts(state):
            parts.append((to_blocks(x[:, :, :1], 1, self.s) - self.first_mean) @ self.first.T)
            x = x[:, :, 1:]
        if x.shape[2]:
            parts.append((to_blocks(x, self.tc, self.s) - self.rest_mean) @ self.rest.T)
        return torch.cat(parts, 1).permute(0, 4, 1, 2, 3)  # (B, C, t, h, w)


class BlockDecoder(_BlockLinear):
    """Latents -> the linear part of the pixels: ``(B, C, t, h, w)`` -> ``(B, 3, T, h*s, w*s)``."""

    def __init__(self, latent_channels: int, tc: int, s: int) -> None:
        super().__init__(latent_channels, tc, s, encode=False)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        rows = z.permute(0, 2, 3, 4, 1)  # (B, t, h, w, C)
        parts = []
        if self._starts(state):
            parts.append(from_blocks(rows[:, :1] @ self.first.T + self.first_mean, self.c, 1, self.s))
            rows = rows[:, 1:]
        if rows.shape[1]:
            parts.append(from_blocks(rows @ self.rest.T + self.rest_mean, self.c, self.tc, self.s))
        return torch.cat(parts, 2)


def init_orthonormal_(encoder: BlockEncoder, decoder: BlockDecoder, generator: torch.Generator | None = None) -> None:
    """Start the pair as a random orthonormal projection and its transpose (means zero)."""
    with torch.no_grad():
        for enc, dec in ((encoder.first, decoder.first), (encoder.rest, decoder.rest)):
            q, _ = torch.linalg.qr(torch.randn(enc.shape[1], enc.shape[0], generator=generator))
            enc.copy_(q.T)
            dec.copy_(q)
        for p in (encoder.first_mean, encoder.rest_mean, decoder.first_mean, decoder.rest_mean):
            p.zero_()


def init_from_pca_(encoder: BlockEncoder, decoder: BlockDecoder, pca) -> None:
    """Set the pair to a fitted ``eval.baselines.BlockPCA`` of the same geometry: then decode(encode(x)) is the
    PCA codec's reconstruction of ``x``. A PCA fitted on images only sets the first frame's maps; the later
    frames' keep their values."""
    if (pca.tc, pca.s, pca.components) != (encoder.tc, encoder.s, encoder.first.shape[0]):
        raise ValueError(f"BlockPCA {pca.tag} does not match the shortcut t{encoder.tc}s{encoder.s}"
                         f"c{encoder.first.shape[0]}")
    with torch.no_grad():
        for basis, enc, dec, enc_mean, dec_mean in (
            (pca.first, encoder.first, decoder.first, encoder.first_mean, decoder.first_mean),
            (pca.rest, encoder.rest, decoder.rest, encoder.rest_mean, decoder.rest_mean),
        ):
            if basis is None:
                continue
            enc.copy_(basis.components)
            dec.copy_(basis.components.T)
            enc_mean.copy_(basis.mean)
            dec_mean.copy_(basis.mean)
