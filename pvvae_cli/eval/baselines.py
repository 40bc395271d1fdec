"""Reference codecs that keep as many numbers as a latent: the floor a trained video VAE has to clear.

A ``t{tc}s{s}c{C}`` latent keeps ``C`` numbers per block of ``tc`` frames x ``s`` x ``s`` pixels (the first
frame is a block of its own, as in the causal VAEs). Two codecs keep exactly that budget:

- ``BlockPCA``: a linear codec fitted on training clips. Every ``(3, tc, s, s)`` block is projected onto the top
  ``C`` principal components of the training blocks (the first frame's ``(3, 1, s, s)`` blocks have a basis of
  their own). It is the best linear code of that size for the training distribution, so a nonlinear VAE that
  cannot beat it on held-out clips has learnt nothing a linear map would not.
- ``bicubic_reconstruct``: each frame downsampled (bicubic, antialiased) to the size that keeps ``C / tc``
  numbers per ``s x s`` block of a frame, then upsampled back: no fitting, no temporal redundancy used.

Pixels are ``(B, 3, T, H, W)`` in [-1, 1] with ``T = 1 + tc*k`` and ``H, W`` multiples of ``s``; outputs have the
same layout, clamped to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pvvae_cli.frames import check_frame_count
from pvvae_cli.models.block_shortcut import from_blocks, to_blocks


def _to_blocks(x: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """``(B, 3, n*t, H, W)`` -> ``(B * n * H/s * W/s, 3*t*s*s)`` rows, one per block."""
    rows = to_blocks(x, t, s)
    return rows.reshape(-1, rows.shape[-1])


def _from_blocks(rows: torch.Tensor, shape: tuple[int, ...], t: int, s: int) -> torch.Tensor:
    """The inverse of ``_to_blocks`` for a clip of ``shape`` ``(B, 3, n*t, H, W)``."""
    b, c, tt, h, w = shape
    return from_blocks(rows.reshape(b, tt // t, h // s, w // s, -1), c, t, s)


@dataclass
class _Basis:
    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (C, D), orthonormal rows

    def code(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows - self.mean) @ self.components.T

    def uncode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.components + self.mean


class _Moments:
    """Running sum and scatter of rows, in float64 (the covariance of millions of blocks)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.double()
        if self.sum is None:
            d = rows.shape[1]
            self.sum, self.scatter = rows.new_zeros(d), rows.new_zeros(d, d)
        self.n += rows.shape[0]
        self.sum += rows.sum(0)
        self.scatter += rows.T @ rows

    def basis(self, components: int) -> _Basis:
        if self.n < 2:
            raise ValueError("BlockPCA.fit needs at least two blocks of each kind; give it more or longer clips")
        mean = self.sum / self.n
        cov = self.scatter / self.n - torch.outer(mean, mean)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        top = vecs[:, -components:].flip(1).T  # (C, D), largest first
        return _Basis(mean.float(), top.float().contiguous())


class BlockPCA:
    """The linear block codec of the module docstring: ``fit`` on training clips, then ``reconstruct``."""

    def __init__(self, temporal_compression: int, spatial_compression: int, components: int) -> None:
        self.tc, self.s, self.components = temporal_compression, spatial_compression, components
        self.first: _Basis | None = None
        self.rest: _Basis | None = None

    @property
    def tag(self) -> str:
        return f"t{self.tc}s{self.s}c{self.components}"

    @classmethod
    def fit(cls, clips: Iterable[torch.Tensor], temporal_compression: int = 4, spatial_compression: int = 16,
            components: int = 32) -> BlockPCA:
        """Fit on ``clips``, each ``(3, 1+tc*k, H, W)`` or ``(B, 3, 1+tc*k, H, W)`` in [-1, 1]."""
        pca = cls(temporal_compression, spatial_compression, components)
        if not 1 <= components <= 3 * spatial_compression**2:  # the first frame's block is the smaller one
            raise ValueError(f"BlockPCA: components must be 1..{3 * spatial_compression**2} (the first frame's "
                             f"block size), got {components}")
        first, rest = _Moments(), _Moments()
        for x in clips:
            x = pca._check(x)
            first.add(_to_blocks(x[:, :, :1], 1, pca.s))
            if x.shape[2] > 1:
                rest.add(_to_blocks(x[:, :, 1:], pca.tc, pca.s))
        # Images only (1-frame clips, e.g. an image training stage): no basis for later frames.
        pca.first, pca.rest = first.basis(components), rest.basis(components) if rest.n else None
        return pca

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(0) if x.ndim == 4 else x
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"clips must be (B, 3, T, H, W), got shape {tuple(x.shape)}")
        check_frame_count(x.shape[2], self.tc)
        if x.shape[-2] % self.s or x.shape[-1] % self.s:
            raise ValueError(f"height and width must be multiples of {self.s}, got {tuple(x.shape[-2:])}")
        return x.float()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1+tc*k, H, W)`` in [-1, 1] -> the codec's reconstruction, same layout, clamped to [-1, 1]."""
        if self.first is None:
            raise RuntimeError("BlockPCA.reconstruct before fit")
        x = self._check(x)
        out = [_from_blocks(self.first.uncode(self.first.code(_to_blocks(x[:, :, :1], 1, self.s))),
                            x[:, :, :1].shape, 1, self.s)]
        if x.shape[2] > 1:
            if self.rest is None:
                raise ValueError("this BlockPCA was fitted on images only; fit it on clips to code later frames")
            rest = x[:, :, 1:]
            rows = self.rest.uncode(self.rest.code(_to_blocks(rest, self.tc, self.s)))
            out.append(_from_blocks(rows, rest.shape, self.tc, self.s))
        return torch.cat(out, 2).clamp(-1, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        assert self.first is not None
        out = {"first.mean": self.first.mean, "first.components": self.first.components}
        if self.rest is not None:
            out.update({"rest.mean": self.rest.mean, "rest.components": self.rest.components})
        return out

    def save(self, path: str | Path) -> None:
        """Write the bases as safetensors (with the block geometry in the metadata)."""
        from safetensors.torch import save_file

        meta = {"temporal_compression": str(self.tc), "spatial_compression": str(self.s),
                "components": str(self.components)}
        save_file(self.state_dict(), str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> BlockPCA:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        try:
            pca = cls(int(meta["temporal_compression"]), int(meta["spatial_compression"]), int(meta["components"]))
            pca.first = _Basis(tensors["first.mean"], tensors["first.components"])
            pca.rest = _Basis(tensors["rest.mean"], tensors["rest.components"]) if "rest.mean" in tensors else None
        except KeyError as e:
            raise ValueError(f"{path}: not a BlockPCA file (missing {e}); refit it with BlockPCA.fit") from e
        return pca


def bicubic_size(height: int, width: int, temporal_compression: int, spatial_compression: int,
                 latent_channels: int) -> tuple[int, int]:
    """The per-frame size that keeps about as many numbers as a ``t{tc}s{s}c{C}`` latent: ``C / tc`` numbers per
    ``s x s`` block of each frame, i.e. a linear factor ``s / sqrt(C / (3 tc))`` (rounded to whole pixels)."""
    side = math.sqrt(latent_channels / (3 * temporal_compression))  # pixels per block side, per frame
    return max(1, round(height * side / spatial_compression)), max(1, round(width * side / spatial_compression))


@torch.no_grad()
def bicubic_reconstruct(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each frame of ``(B, 3, T, H, W)`` in [-1, 1] downsampled to ``size`` (bicubic, antialiased) and upsampled
    back to ``H x W`` (bicubic); clamped to [-1, 1]."""
    b, c, t, h, w = x.shape
    frames = x.float().transpose(1, 2).reshape(b * t, c, h, w)
    small = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return back.reshape(b, t, c, h, w).transpose(1, 2).clamp(-1, 1)
