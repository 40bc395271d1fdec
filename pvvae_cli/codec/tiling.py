"""Spatial tiling for large frames: overlapping tiles, each its own causal stream, blended linearly.

Tiles are laid out on the *latent* grid and every pixel-space quantity is the latent one times the spatial
factor ``s`` (16 for t4s16): a tile of ``tile`` latent positions is ``tile * s`` pixels, and the linear blend
ramp spans ``overlap`` latent positions = ``overlap * s`` pixels, over exactly the same region of the frame in
both spaces. (Computing the blend width in one space and applying it in the other is a classic source of seams.)

Each tile is its own stream of the model (``model.new_stream()``), so tiling composes with chunked (streaming)
inference: for every time chunk, every tile goes through ``encode_chunk``/``decode_chunk`` with its own stream,
then the tiles are blended. Without streams, every tile goes through the one-pass ``encode``/``decode``. The model
is used through ``models.protocol.VideoAutoencoder`` only. Blending divides the weighted sum by the sum of
weights, so uneven overlaps at the frame's far edge stay seamless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.models.protocol import VideoAutoencoder

TILE_MODES = ("auto", "on", "off")
MARGIN = 0.25  # fraction of the overlap, at each tile border, that gets zero weight


@dataclass(frozen=True)
class TileSpec:
    """Tile size and overlap (= blend width) in pixels; both must be multiples of the spatial factor."""

    tile: int = 512
    overlap: int = 128

    def validate_basic(self) -> None:
        """The rules that do not depend on the model (checked before it loads)."""
        if self.tile < 1 or self.overlap < 1:
            raise ValueError(f"tile size ({self.tile}) and overlap ({self.overlap}) must be positive")
        if self.overlap * 2 > self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be at most half the tile size ({self.tile})")

    def validate(self, spatial_factor: int) -> None:
        self.validate_basic()
        s = spatial_factor
        if self.tile % s or self.overlap % s or self.tile < 2 * s or self.overlap < s:
            raise ValueError(f"tile size ({self.tile}) and overlap ({self.overlap}) must be multiples of {s} "
                             f"pixels, tile >= {2 * s}, overlap >= {s}")
        if self.overlap * 2 > self.tile:
            raise ValueError(f"overlap ({self.overlap}) must be at most half the tile size ({self.tile})")


def use_tiling(mode: str, height: int, width: int, spec: TileSpec) -> bool:
    """``on``/``off`` as given; ``auto`` tiles frames whose height or width exceeds the tile size."""
    if mode not in TILE_MODES:
        raise ValueError(f"unknown tile mode {mode!r}; choose one of {', '.join(TILE_MODES)}")
    if mode == "auto":
        return height > spec.tile or width > spec.tile
    return mode == "on"


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of size ``tile`` covering ``[0, length)``, neighbours overlapping by at least
    ``overlap`` (the last tile is moved back to end exactly at ``length``)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(n: int, lead: bool, trail: bool, overlap: int, margin: int) -> torch.Tensor:
    """1D blend weights of a tile of ``n`` positions. On each side with a neighbour, the outer ``margin`` of the
    ``overlap`` gets weight 0 (a tile's own border is where its zero padding disturbs it most) and the middle
    ``overlap - 2 * margin`` ramps linearly to 1, so over an overlap of exactly ``overlap`` the two tiles'
    weights sum to 1."""
    w = torch.ones(n)
    width = overlap - 2 * margin
    ramp = torch.zeros(overlap)
    ramp[margin : margin + width] = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    ramp[margin + width :] = 1.0
    if lead:
        w[:overlap] = ramp
    if trail:
        w[n - overlap :] = torch.minimum(w[n - overlap :], ramp.flip(0))
    return w


class TileGrid:
    """Overlapping tiles of a latent grid ``(h, w)``; ``boxes`` are ``(top, left, height, width)`` in latents."""

    def __init__(self, h: int, w: int, spec: TileSpec, spatial_factor: int) -> None:
        spec.validate(spatial_factor)
        self.h, self.w, self.s = h, w, spatial_factor
        self.tile, self.overlap = spec.tile // spatial_factor, spec.overlap // spatial_factor
        ys, xs = tile_starts(h, self.tile, self.overlap), tile_starts(w, self.tile, self.overlap)
        self.boxes = [(y, x, min(self.tile, h), min(self.tile, w)) for y in ys for x in xs]
        self._weights: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.boxes)

    def weights(self, scale: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-tile 2D weights at ``scale`` (1: latent, ``s``: pixels) and their sum over the full frame."""
        if scale not in self._weights:
            # Both widths are fixed in latent units and scaled: the same frame region in latent and pixel space.
            overlap, margin = self.overlap * scale, int(self.overlap * MARGIN) * scale
            tiles, total = [], torch.zeros(self.h * scale, self.w * scale)
            for y, x, th, tw in self.boxes:
                wy = _ramp(th * scale, y > 0, y + th < self.h, overlap, margin)
                wx = _ramp(tw * scale, x > 0, x + tw < self.w, overlap, margin)
                w2 = wy[:, None] * wx[None, :]
                tiles.append(w2)
                total[y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += w2
            self._weights[scale] = (tiles, total)
        return self._weights[scale]

    def new_streams(self, model: VideoAutoencoder) -> list[Any]:
        """One fresh stream of ``model`` per tile, for one direction of one clip."""
        return [model.new_stream() for _ in self.boxes]

    def encode(self, model: VideoAutoencoder, x: torch.Tensor, streams: list[Any] | None = None) -> DiagonalGaussian:
        """Pixels ``(B, 3, T, h*s, w*s)`` in [-1, 1] -> the blended fp32 posterior ``(B, C, t, h, w)``: each tile
        through ``model.encode_chunk`` with its stream (``streams`` from ``new_streams``), or through the
        one-pass ``model.encode`` when ``streams`` is None. Mean and log-variance are blended alike."""

        def moments(tile: torch.Tensor, stream: Any) -> torch.Tensor:
            post = model.encode(tile) if stream is None else model.encode_chunk(tile, stream)
            return torch.cat([post.mean, post.logvar], dim=1)

        return DiagonalGaussian.from_moments(self.run(moments, x, streams, in_scale=self.s, out_scale=1))

    def decode(self, model: VideoAutoencoder, z: torch.Tensor, streams: list[Any] | None = None) -> torch.Tensor:
        """Latents ``(B, C, t, h, w)`` -> blended fp32 pixels ``(B, 3, T, h*s, w*s)`` (not clamped), each tile
        through ``model.decode_chunk`` with its stream, or the one-pass ``model.decode`` when ``streams`` is None."""

        def pixels(tile: torch.Tensor, stream: Any) -> torch.Tensor:
            return model.decode(tile) if stream is None else model.decode_chunk(tile, stream)

        return self.run(pixels, z, streams, in_scale=1, out_scale=self.s)

    def run(
        self, fn: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, streams: list[Any] | None,
        in_scale: int, out_scale: int,
    ) -> torch.Tensor:
        """Apply ``fn(tile, stream)`` to every tile of ``x`` ``(B, C, T, H, W)`` (``H = h * in_scale``; ``stream``
        is None for every tile when ``streams`` is None) and blend the outputs ``(B, C', T', h * out_scale,
        w * out_scale)`` in fp32."""
        tiles_w, total = self.weights(out_scale)
        streams = [None] * len(self.boxes) if streams is None else streams
        out = None
        for (y, x0, th, tw), w2, stream in zip(self.boxes, tiles_w, streams, strict=True):
            a = x[..., y * in_scale : (y + th) * in_scale, x0 * in_scale : (x0 + tw) * in_scale]
            r = fn(a, stream).float()
            if out is None:
                out = r.new_zeros(*r.shape[:-2], self.h * out_scale, self.w * out_scale)
            ys, xs = slice(y * out_scale, (y + th) * out_scale), slice(x0 * out_scale, (x0 + tw) * out_scale)
            out[..., ys, xs] += r * w2.to(r.device)
        return out / total.to(out.device)
