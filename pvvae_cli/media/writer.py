"""Writing frames: mp4 (H.264), one image, or a folder of PNG frames, streamed and atomic.

Frames are ``uint8 (T, H, W, 3)`` RGB. Videos go through the ffmpeg binary shipped by imageio-ffmpeg; every write
is atomic (temp file in the same folder, then ``os.replace``), so an interrupted write leaves no partial output.

A writer can stamp its output with a ``tag`` (a short string: who wrote it, from what), read back by ``read_tag``:
the container's ``comment`` tag of a video, a text chunk of a PNG image, a hidden ``.pvvae-tag`` file inside a
PNG-frame folder. ``pvvae decode`` uses it to tell its own up-to-date outputs from stale ones and from other files.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np

from pvvae_cli.media.video_io import IMAGE_EXTS
from pvvae_cli.runtime.atomic import AtomicFile, set_default_mode, temp_sibling

FOLDER_TAG = ".pvvae-tag"  # hidden: folder walks skip it
PNG_TAG_KEY = "pvvae"
# ffmpeg muxer per suffix: the temp file's name ends in .tmp, so ffmpeg cannot guess the format from it.
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}
VIDEO_EXTS_WRITTEN = frozenset(_MUXERS)  # fewer than are read (media.video_io.VIDEO_EXTS)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a uint8 numpy array (T, H, W, 3), got {type(frames).__name__} {shape}")
    return np.ascontiguousarray(frames)


def output_kind(path: str | Path) -> str:
    """``video`` (a video suffix), ``image`` (an image suffix: one frame) or ``frames`` (no suffix: PNG folder)."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTS_WRITTEN:
        return "video"
    if suffix in IMAGE_EXTS:
        return "image"
    if suffix == "":
        return "frames"
    raise ValueError(f"cannot write {path}: use a video suffix ({', '.join(sorted(VIDEO_EXTS_WRITTEN))}), "
                     "an image suffix for one frame, or a folder path (no suffix) for PNG frames")


class VideoWriter:
    """Streaming, atomic writer of uint8 ``(n, H, W, 3)`` frame chunks; memory is bounded by one chunk.

    - video suffix (``.mp4``, ...): H.264 (yuv420p, what browsers and QuickTime play) through the ffmpeg of
      imageio-ffmpeg at ``fps`` with quality ``crf`` (0 = lossless, lower is better; the default 12 is visually
      lossless). yuv420p needs an even height and width: an odd one gets one replicated row/column, and
      ``notes`` says so (PNG output keeps any size exactly).
    - image suffix (``.png``, ...): exactly one frame.
    - no suffix: a folder of PNG frames ``000000.png, 000001.png, ...`` (an existing folder is replaced whole).

    Use as a context manager: the output appears under ``path`` only when the block exits without error.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 12, tag: str | None = None) -> None:
        self.path = Path(path)
        self.tag = tag
        self.notes: list[str] = []
        self.kind = output_kind(self.path)
        if self.kind == "video" and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number to write {self.path}, got {fps}")
        self.fps, self.crf = fps, crf
        self.num_written = 0
        self._size: tuple[int, int] | None = None
        self._ffmpeg = None
        self._atomic = None
        self._tmp: Path | None = None
        self._frames: list[np.ndarray] = []

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "frames":
            self._tmp = temp_sibling(self.path, directory=True)
        else:
            self._atomic = AtomicFile(self.path)
            self._tmp = self._atomic.tmp
        return self

    def write(self, frames: np.ndarray) -> None:
        frames = _check_frames(frames)
        if frames.shape[0] == 0:
            return
        size = frames.shape[1:3]
        if self._size is not None and size != self._size:
            raise ValueError(f"{self.path}: frame size changed from {self._size} to {size}")
        self._size = size
        if self.kind == "video":
            if self._ffmpeg is None:
                self._ffmpeg = self._start_ffmpeg(*size)
            h, w = size
            if h % 2 or w % 2:
                frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for frame in frames:
                self._ffmpeg.send(np.ascontiguousarray(frame))
        elif self.kind == "image":
            if self.num_written + frames.shape[0] > 1:
                raise ValueError(f"{self.path}: more than one frame cannot go into one image; give a folder path "
                                 "(no suffix) for PNG frames")
            self._frames.append(frames[0])
        else:
            for i, frame in enumerate(frames):
                _write_png(self._tmp / f"{self.num_written + i:06d}.png", frame)
        self.num_written += frames.shape[0]

    def _start_ffmpeg(self, h: int, w: int):
        import imageio_ffmpeg

        # yuv420p is what browsers and QuickTime play (yuv444p H.264 is not); it needs even sizes, and H.264 can
        # only crop even amounts away, so an odd size grows by one replicated row/column.
        if h % 2 or w % 2:
            self.notes.append(f"odd size {h}x{w} written as {h + h % 2}x{w + w % 2} (one replicated edge row/"
                              "column): H.264 that common players open needs even sizes; --format png keeps it exact")
        params = ["-crf", str(self.crf), "-f", _MUXERS[self.path.suffix.lower()]]
        if self.tag is not None:
            params += ["-metadata", f"comment={self.tag}"]
        gen = imageio_ffmpeg.write_frames(
            str(self._tmp), (w + w % 2, h + h % 2), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, output_params=params, ffmpeg_log_level="error",
        )
        gen.send(None)  # start ffmpeg
        return gen

    def __exit__(self, exc_type, exc, tb) -> None:
        ok = exc_type is None and self.num_written > 0
        try:
            if self._ffmpeg is not None:
                self._ffmpeg.close()  # flushes and waits for ffmpeg
            if ok and self.kind == "image":
                import imageio.v3 as iio

                extra = {}
                if self.tag is not None and self.path.suffix.lower() == ".png":
                    from PIL.PngImagePlugin import PngInfo

                    extra["pnginfo"] = PngInfo()
                    extra["pnginfo"].add_text(PNG_TAG_KEY, self.tag)
                iio.imwrite(self._tmp, self._frames[0], extension=self.path.suffix.lower(), **extra)
        except BaseException:
            ok = False
            raise
        finally:
            if self.kind == "frames":
                self._finish_folder(ok)
            elif ok:
                self._atomic.commit()
            else:
                self._atomic.abort()
        if exc_type is None and self.num_written == 0:
            raise ValueError(f"{self.path}: no frames to write")

    def _finish_folder(self, ok: bool) -> None:
        tmp = self._tmp
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        set_default_mode(tmp, directory=True)
        if self.tag is not None:
            (tmp / FOLDER_TAG).write_text(self.tag)
        if self.path.exists():
            # A non-empty folder cannot be replaced atomically: move the old one aside first.
            old = temp_sibling(self.path, directory=True)
            os.replace(self.path, old / "x")
            os.replace(tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, self.path)


def read_tag(path: str | Path) -> str | None:
    """The ``tag`` a ``VideoWriter`` stamped on ``path``, or ``None`` (no tag, not ours, unreadable)."""
    path = Path(path)
    try:
        kind = output_kind(path)
        if kind == "frames":
            return (path / FOLDER_TAG).read_text() if (path / FOLDER_TAG).is_file() else None
        if kind == "video":
            from pvvae_cli.media.ffmpeg_probe import read_header

            return read_header(path).metadata.get("comment")
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return getattr(im, "text", {}).get(PNG_TAG_KEY)
    except (OSError, ValueError):
        return None
    return None


def _write_png(path: Path, frame: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, frame, extension=".png")


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 12) -> list[str]:
    """Write uint8 ``(T, H, W, 3)`` frames atomically: ``.mp4`` (H.264, at ``fps``), an image file (``T == 1``)
    or a folder of PNG frames (a path without suffix). See ``VideoWriter``. Returns its ``notes``."""
    frames = _check_frames(frames)
    if frames.shape[0] == 0:
        raise ValueError(f"{path}: no frames to write")
    with VideoWriter(path, fps, crf) as writer:
        writer.write(frames)
    return writer.notes
