"""Synthetic clips with predictable motion, for tests and quick experiments (no files, no downloads).

Three kinds, each a pure function of ``(seed, index)``:

- ``shapes``: one to three discs / squares / rings moving at constant velocity over a colour gradient,
  bouncing off the frame borders;
- ``digits``: Moving-MNIST-like bitmap digits (a built-in 5x7 font, scaled) bouncing on a dark background;
- ``textures``: a camera pan at constant velocity over a smooth procedural texture (sums of coloured
  sinusoids), optionally with a moving disc in front of it.

``mix`` picks one of the three per clip. Motion is linear (with reflections), so the future of a clip is
predictable from its beginning: exactly what the predictive objective trains for.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

KINDS = ("shapes", "digits", "textures", "mix")

# 5x7 bitmap font for 0-9 (rows top to bottom, 5 bits each, MSB = left column).
_FONT = {
    0: (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    1: (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    2: (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    3: (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    4: (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    5: (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    6: (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    7: (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    8: (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    9: (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
}


def _glyph(digit: int) -> np.ndarray:
    """The 7x5 float mask of a digit."""
    rows = _FONT[digit]
    return np.array([[(r >> (4 - c)) & 1 for c in range(5)] for r in rows], dtype=np.float32)


def _bounce(p0: np.ndarray, v: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions ``(T, 2)`` of a point moving at velocity ``v`` from ``p0`` and reflecting off [lo, hi]."""
    span = np.maximum(hi - lo, 1e-6)
    u = (p0 - lo)[None] + v[None] * t[:, None]  # unfolded path
    u = np.mod(u, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)  # triangle wave = reflection


def _gradient_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp between two random colours at a random angle, ``(H, W, 3)`` in [0, 1]."""
    c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w), indexing="ij")
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 0.71) / 1.42
    return (c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]).astype(np.float32)


def _paint_shapes(frames: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Composite ``count`` moving shapes onto ``frames`` ``(T, H, W, 3)`` in place."""
    t_len, h, w, _ = frames.shape
    t = np.arange(t_len, dtype=np.float32)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    for _ in range(count):
        radius = rng.uniform(0.08, 0.2) * min(h, w)
        speed = rng.uniform(0.6, 2.5) * min(h, w) / 64  # pixels per frame, scaled with the frame size
        angle = rng.uniform(0, 2 * np.pi)
        v = np.array([np.sin(angle), np.cos(angle)]) * speed  # (dy, dx)
        lo, hi = np.array([radius, radius]), np.array([h - radius, w - radius])
        centers = _bounce(rng.uniform(lo, hi), v, t, lo, hi)  # (T, 2)
        dy = yy[None] - centers[:, 0, None, None]
        dx = xx[None] - centers[:, 1, None, None]
        kind = rng.integers(3)
        if kind == 0:  # disc
            dist = np.sqrt(dy**2 + dx**2) - radius
        elif kind == 1:  # square
            dist = np.maximum(np.abs(dy), np.abs(dx)) - radius
        else:  # ring
            dist = np.abs(np.sqrt(dy**2 + dx**2) - 0.7 * radius) - 0.3 * radius
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]  # one-pixel anti-aliased edge, (T, H, W, 1)
        color = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        frames *= 1 - alpha
        frames += alpha * color


def _shapes(rng: np.random.Generator, t_len: int, h: int, w: int) -> np.ndarray:
    frames = np.repeat(_gradient_background(rng, h, w)[None], t_len, axis=0)
    _paint_shapes(frames, rng, int(rng.integers(1, 4)))
    return frames


def _digits(rng: np.random.Generator, t_len: int, h: int, w: int) -> np.ndarray:
    frames = np.zeros((t_len, h, w, 3), dtype=np.float32)
    frames += rng.uniform(0.0, 0.15, 3).astype(np.float32)  # dark, slightly tinted background
    scale = max(1, int(round(min(h, w) * 0.4 / 7)))
    t = np.arange(t_len, dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        glyph = np.kron(_glyph(int(rng.integers(10))), np.ones((scale, scale), dtype=np.float32))
        gh, gw = glyph.shape
        if gh > h or gw > w:
            continue
        speed = rng.uniform(1.0, 3.0) * min(h, w) / 64
        angle = rng.uniform(0, 2 * np.pi)
        v = np.array([np.sin(angle), np.cos(angle)]) * speed
        lo, hi = np.zeros(2), np.array([h - gh, w - gw], dtype=np.float64)
        tops = np.rint(_bounce(rng.uniform(lo, hi), v, t, lo, hi)).astype(int)  # integer steps, like Moving MNIST
        color = rng.uniform(0.6, 1.0, 3).astype(np.float32)
        for i, (y0, x0) in enumerate(tops):
            region = frames[i, y0 : y0 + gh, x0 : x0 + gw]
            np.maximum(region, glyph[..., None] * color, out=region)
    return frames


def _textures(rng: np.random.Generator, t_len: int, h: int, w: int) -> np.ndarray:
    n_waves = 6
    # Wave vectors in cycles per pixel (coarse to medium detail); a pan shifts the sampling grid each frame.
    freq = rng.uniform(0.01, 0.08, n_waves) * rng.choice([-1, 1], n_waves)
    theta = rng.uniform(0, np.pi, n_waves)
    ky, kx = freq * np.sin(theta), freq * np.cos(theta)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    mix = rng.uniform(-1.0, 1.0, (n_waves, 3)) / np.sqrt(n_waves)
    speed = rng.uniform(0.5, 2.5) * min(h, w) / 64
    angle = rng.uniform(0, 2 * np.pi)
    vy, vx = np.sin(angle) * speed, np.cos(angle) * speed
    t = np.arange(t_len, dtype=np.float32)[:, None, None]
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    frames = np.zeros((t_len, h, w, 3), dtype=np.float32)
    for i in range(n_waves):
        wave = np.sin(2 * np.pi * (ky[i] * (yy + vy * t) + kx[i] * (xx + vx * t)) + phase[i])  # (T, H, W)
        frames += wave[..., None] * mix[i].astype(np.float32)
    frames = 0.5 + 0.5 * np.tanh(frames + rng.uniform(-0.3, 0.3, 3).astype(np.float32))
    if rng.random() < 0.5:  # an object moving independently of the camera
        _paint_shapes(frames, rng, 1)
    return frames


_MAKERS = {"shapes": _shapes, "digits": _digits, "textures": _textures}


def _pick_kind(rng: np.random.Generator) -> str:
    """What a ``mix`` clip is: the first draw of its generator."""
    return ("shapes", "digits", "textures")[int(rng.integers(3))]


def make_clip(kind: str, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic clip: float32 ``(T, H, W, 3)`` in [0, 1]. ``kind`` in ``KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"synthetic clips need frames >= 1 and a size of at least 8x8, got {frames}x{height}x{width}")
    if kind == "mix":
        kind = _pick_kind(rng)
    return np.clip(_MAKERS[kind](rng, frames, height, width), 0.0, 1.0)


class SyntheticClips(Dataset):
    """A dataset of synthetic clips: item ``i`` is float32 ``(3, T, H, W)`` in [-1, 1], a pure function of
    ``(seed, i)`` (so it is the same in every DataLoader worker and after a resume).

    ``length`` is nominal: any non-negative index is valid (training samplers draw an endless stream).
    """

    def __init__(
        self, kind: str = "mix", frames: int = 17, size: int | tuple[int, int] = 64, seed: int = 0,
        length: int = 1_000_000,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.frames = frames
        self.height, self.width = (size, size) if isinstance(size, int) else size
        self.seed = seed
        self.length = length
        make_clip(kind, frames, self.height, self.width, np.random.default_rng(0))  # validate sizes up front

    def __len__(self) -> int:
        return self.length

    def kind_of(self, index: int) -> str:
        """The kind of item ``index`` (for ``mix``, the kind it drew)."""
        return self.kind if self.kind != "mix" else _pick_kind(np.random.default_rng([self.seed, index]))

    def clip(self, index: int) -> np.ndarray:
        """Item ``index`` as float32 ``(T, H, W, 3)`` in [0, 1]."""
        if index < 0:
            raise IndexError(f"index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        return make_clip(self.kind, self.frames, self.height, self.width, rng)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(self.clip(int(index))).permute(3, 0, 1, 2)  # (3, T, H, W) in [0, 1]
        return (x * 2 - 1).contiguous()
