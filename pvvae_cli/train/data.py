"""Training data: random windows of ``1 + tc*k`` frames from folders of videos and images, or synthetic clips.

Every sample is a pure function of ``(seed, position)``, where ``position`` counts samples in one endless,
global stream: the file comes from a per-epoch permutation, the window start and crop from a generator seeded
by the position. So the data do not depend on the number of DataLoader workers, each DDP rank takes every
``world``-th position (sharding), and a resumed run continues the stream exactly from a stored position.

Sources (``--data``): a folder (searched recursively), repeatable; or ``synthetic:KIND`` with ``KIND`` one of
``shapes``, ``digits``, ``textures``, ``mix`` (see ``pvvae_cli.synthetic``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pvvae_cli.errors import PvvaeError
from pvvae_cli.frames import frame_rule_message, is_valid_frame_count
from pvvae_cli.media.transforms import resize_crop
from pvvae_cli.models.pvvae.config import VAEConfig
from pvvae_cli.train.synthetic import KINDS, SyntheticClips

SYNTHETIC_PREFIX = "synthetic:"


class DataError(PvvaeError, ValueError):
    """Training data that cannot be used; the message names the source and the fix."""


def is_synthetic(spec: str) -> bool:
    return str(spec).startswith(SYNTHETIC_PREFIX)


def scan_media(roots: Sequence[str | Path], videos_only: bool) -> list[Path]:
    """All video (and, unless ``videos_only``, image) files under ``roots``, found by ``media.discovery``'s one
    folder walk (sorted, hidden files and folders skipped). Raises ``DataError`` for a missing folder or one
    without usable files."""
    from pvvae_cli.media.discovery import media_exts, media_files
    from pvvae_cli.media.video_io import IMAGE_EXTS

    exts = media_exts(images=not videos_only)
    files: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"{root}: no such data folder; pass --data with a folder of videos/images "
                            f"or {SYNTHETIC_PREFIX}KIND")
        found = media_files(root, exts)
        if not found:
            images = media_files(root, IMAGE_EXTS)
            if videos_only and images:
                raise DataError(f"{root}: holds {len(images)} image(s) but no videos; video training needs "
                                "videos (train images with --stage image)")
            kinds = ", ".join(sorted(exts))
            raise DataError(f"{root}: no {'video' if videos_only else 'video or image'} files found ({kinds})")
        files.extend(found)
    return files


class ClipDataset(Dataset):
    """Clips of ``frames`` frames (``1 + tc*k``, ``tc`` = ``temporal_compression``, the model's temporal factor)
    at ``frame_stride`` from the files under ``roots``.

    Item ``position`` (any non-negative int) is ``(pixels, skipped)``: pixels float32 ``(3, T, size, size)``
    in [-1, 1], and ``skipped``, a tuple of ``"path: reason"`` strings for files that had to be passed over
    (unreadable, or too short for the window) before a usable one was found. Skipping is deterministic: the
    next file of the epoch's order is tried. With ``frames == 1`` images are used too (a video contributes a
    random frame); otherwise only videos are.
    """

    def __init__(
        self, roots: Sequence[str | Path], frames: int = 17, size: int = 64, frame_stride: int = 1, seed: int = 0,
        temporal_compression: int = VAEConfig.temporal_compression, scale_max: int = 0,
    ) -> None:
        if not is_valid_frame_count(frames, temporal_compression):
            raise DataError(frame_rule_message(frames, temporal_compression, "frames"))
        if frame_stride < 1:
            raise DataError(f"frame stride must be >= 1, got {frame_stride}")
        self.roots = [str(r) for r in roots]
        self.files = scan_media(roots, videos_only=frames > 1)
        self.frames = frames
        self.size = size
        self.frame_stride = frame_stride
        self.scale_max = scale_max  # > size: the short side is resized to a random size in [size, scale_max]
        self.seed = seed
        self._info: dict[Path, object] = {}  # probe cache (per worker process)
        self._bad: dict[Path, str] = {}  # files that failed, with the reason (per worker process)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.files)))
        return self._perm[1]

    def _load(self, path: Path, rng: np.random.Generator) -> torch.Tensor:
        from pvvae_cli.media.video_io import VideoReadError, frames_to_tensor, probe, read_clip

        info = self._info.get(path)
        if info is None:
            info = self._info[path] = probe(path)
        span = (self.frames - 1) * self.frame_stride + 1
        if info.num_frames < span:
            raise VideoReadError(path, f"too short: {info.num_frames} frames, a window of {self.frames} frames at "
                                       f"stride {self.frame_stride} needs {span}")
        start = int(rng.integers(info.num_frames - span + 1))
        frames, _ = read_clip(path, start=start, num_frames=self.frames, stride=self.frame_stride)
        if frames.shape[0] != self.frames:
            raise VideoReadError(path, f"decoded {frames.shape[0]} frames, expected {self.frames}")
        short = int(rng.integers(self.size, self.scale_max + 1)) if self.scale_max > self.size else None
        return resize_crop(frames_to_tensor(frames), self.size, rng, short)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, tuple[str, ...]]:
        from pvvae_cli.media.video_io import VideoReadError

        position = int(position)
        n = len(self.files)
        order = self._order(position // n)
        skipped: list[str] = []
        for attempt in range(n):
            path = self.files[order[(position + attempt) % n]]
            if path in self._bad:
                skipped.append(f"{path}: {self._bad[path]}")
                continue
            rng = np.random.default_rng([self.seed, position, attempt])
            try:
                return self._load(path, rng), tuple(skipped)
            except (VideoReadError, OSError, RuntimeError) as e:
                reason = e.reason if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"
                self._bad[path] = reason
                skipped.append(f"{path}: {reason}")
        raise DataError(f"no usable clip in {', '.join(self.roots)}: all {n} files are unreadable or shorter than "
                        f"{self.frames} frames at stride {self.frame_stride} (first: {skipped[0]})")


class StreamSampler(Sampler[int]):
    """The endless stream of global sample positions one rank reads: ``(start + i) * world + rank``.

    ``start`` is the number of samples this rank has already consumed (stored in checkpoints)."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield i * self.world + self.rank
            i += 1


def collate_clips(items: list) -> tuple[torch.Tensor, list[str]]:
    """Stack samples into ``(B, 3, T, H, W)`` and gather every ``skipped`` message."""
    pixels, skipped = [], []
    for item in items:
        if isinstance(item, torch.Tensor):
            pixels.append(item)
        else:
            pixels.append(item[0])
            skipped.extend(item[1])
    return torch.stack(pixels), skipped


def make_dataset(
    specs: Sequence[str], frames: int, size: int, frame_stride: int = 1, seed: int = 0,
    temporal_compression: int = VAEConfig.temporal_compression, scale_max: int = 0,
) -> Dataset:
    """A dataset from ``--data`` values: folders, or exactly one ``synthetic:KIND``. ``frames`` must be
    ``1 + tc*k`` for the model's ``temporal_compression``; ``scale_max > size`` gives multi-scale crops (folders
    only): each clip's short side is resized to a random size in ``[size, scale_max]`` before the random crop."""
    specs = [str(s) for s in specs]
    if not specs:
        raise DataError(f"no training data: pass --data DIR (repeatable) or --data {SYNTHETIC_PREFIX}KIND")
    synthetic = [s for s in specs if is_synthetic(s)]
    if synthetic:
        if len(specs) > 1:
            raise DataError(f"{synthetic[0]} cannot be combined with other --data sources")
        kind = synthetic[0][len(SYNTHETIC_PREFIX):]
        if kind not in KINDS:
            raise DataError(f"--data {synthetic[0]}: unknown synthetic kind {kind!r}; choose one of "
                            + ", ".join(SYNTHETIC_PREFIX + k for k in KINDS))
        if frame_stride != 1:
            raise DataError("--frame-stride applies to folders of videos, not to synthetic data")
        if scale_max:
            raise DataError("--scale-max applies to folders of videos and images, not to synthetic data")
        if not is_valid_frame_count(frames, temporal_compression):
            raise DataError(frame_rule_message(frames, temporal_compression, "frames"))
        return SyntheticClips(kind, frames=frames, size=size, seed=seed)
    return ClipDataset(specs, frames=frames, size=size, frame_stride=frame_stride, seed=seed,
                       temporal_compression=temporal_compression, scale_max=scale_max)


def make_loader(
    dataset: Dataset, batch_size: int, workers: int = 0, start: int = 0, rank: int = 0, world: int = 1,
    worker_init_fn: Callable[[int], None] | None = None, pin_memory: bool = False,
) -> DataLoader:
    """An endless DataLoader over ``dataset`` for one rank, starting after ``start`` consumed samples.
    ``pin_memory`` (for a CUDA run): batches in page-locked memory, so ``to(device, non_blocking=True)`` overlaps
    the copy with compute instead of syncing."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=StreamSampler(start, rank, world), num_workers=workers,
        collate_fn=collate_clips, drop_last=True, persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None, worker_init_fn=worker_init_fn if workers > 0 else None,
        pin_memory=pin_memory,
    )
