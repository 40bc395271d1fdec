"""The reconstruction protocol: which clips, which frames, at which size (the paper's, §4 / Table 2).

Each clip's first ``frames`` (17) frames from ``start`` (or ``windows`` windows of ``frames`` frames spread evenly
from ``start`` to the clip's end: ``window_starts``), the short side resized to ``size`` (bilinear,
antialiased when shrinking) and a centre ``size x size`` crop (``media.transforms.resize_crop``). The protocol
does not know the models: frame counts follow each model's temporal factor (``pvvae_cli.frames``), checked by
``check_model`` for every model it is run on.

Clips are ``(3, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pvvae_cli.codec.prediction import check_prediction_frames, resolve_padding
from pvvae_cli.errors import PvvaeError
from pvvae_cli.frames import check_frame_count
from pvvae_cli.media.discovery import collect_videos
from pvvae_cli.media.transforms import resize_crop
from pvvae_cli.media.video_io import VideoReadError, frames_to_tensor, probe, read_clip

if TYPE_CHECKING:
    from pvvae_cli.models.protocol import VideoAutoencoder


class ClipSkipped(PvvaeError, ValueError):
    """A clip that cannot enter the protocol (too short, unreadable); the message says why."""


def load_clip(path: str | Path, frames: int, size: int | None, start: int = 0) -> torch.Tensor:
    """The protocol's clip: ``(3, frames, size, size)`` in [-1, 1] (native size when ``size`` is None).
    Raises ``ClipSkipped`` for a clip with fewer than ``start + frames`` frames or one that cannot be read."""
    try:
        info = probe(path)
        if info.num_frames < start + frames:
            raise ClipSkipped(f"{path}: has {info.num_frames} frames, the protocol needs {start + frames} "
                              f"(start {start} + {frames})")
        raw, _ = read_clip(path, start=start, num_frames=frames)
    except VideoReadError as e:
        raise ClipSkipped(str(e)) from e
    x = frames_to_tensor(raw)
    return x if size is None else resize_crop(x, size)


def window_starts(num_frames: int, frames: int, windows: int = 1, start: int = 0) -> list[int]:
    """First frames of ``windows`` windows of ``frames`` frames spread evenly over ``start .. num_frames - 1`` (the
    first at ``start``, the last ending at the clip's end; fewer when the clip is too short for distinct ones).
    One window: ``[start]``. Empty when not even one fits."""
    last = num_frames - frames
    if last < start:
        return []
    if windows == 1:
        return [start]
    return sorted({start + round(i * (last - start) / (windows - 1)) for i in range(windows)})


@dataclass(frozen=True)
class EvalProtocol:
    """What is measured; written into the JSON so numbers can be reproduced."""

    frames: int = 17
    size: int = 256
    start: int = 0
    windows: int = 1  # windows per clip, spread evenly from start to the end (window_starts)
    predict_context: int | None = None
    padding: str = "auto"  # padding latents for prediction: auto (the model's), learnable, gaussian
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a positive multiple of 16, got {self.size}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.windows < 1:
            raise ValueError(f"windows must be >= 1, got {self.windows}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    def check_model(self, vae: VideoAutoencoder) -> None:
        """Raise ``ValueError`` unless ``vae`` can run this protocol: ``frames`` (and the prediction's context and
        future frames) follow its temporal factor, and it has the padding asked for."""
        tc = vae.config.temporal_compression
        check_frame_count(self.frames, tc, "frames")
        if self.predict_context is not None:
            check_prediction_frames(self.predict_context, self.frames - self.predict_context, tc)
            resolve_padding(vae, self.padding)

    def find_videos(self, inputs: Sequence[str | Path], max_videos: int | None = None) -> list[Path]:
        """The clips under ``inputs`` (files, or folders searched recursively): videos, and images too when the
        protocol's clips are single frames; at most ``max_videos`` of them, in sorted order per folder."""
        if max_videos is not None and max_videos < 1:
            raise ValueError(f"max videos must be >= 1, got {max_videos}")
        return collect_videos(inputs, include_images=self.frames == 1)[:max_videos]

    def clips(self, videos: Sequence[str | Path]):
        """Yield ``(name, clip)`` for every window of every video, or ``(message, None)`` for one that is skipped
        (too short, unreadable). ``name`` is the path, with ``@START`` when there are several windows."""
        for path in videos:
            try:
                starts = window_starts(probe(path).num_frames, self.frames, self.windows, self.start)
            except VideoReadError as e:
                yield str(e), None
                continue
            for s in starts or [self.start]:  # too short: load_clip says why
                try:
                    clip = load_clip(path, self.frames, self.size, s)
                except ClipSkipped as e:
                    yield str(e), None
                    continue
                yield (f"{path}@{s}" if self.windows > 1 else str(path)), clip
