"""Video and image input: probe and read clips as uint8 frames, convert frames to/from tensors.

Frames on the numpy side are ``uint8 (T, H, W, 3)`` RGB; on the torch side pixels are float ``(3, T, H, W)`` in
[-1, 1] (add the batch axis yourself). Videos are read with decord (exact frame access through ``get_batch``),
images (png/jpg/webp/bmp) with imageio as 1-frame clips. Writing is ``media/writer.py``'s.

Where decord is not installed (it has no wheel for macOS on Apple silicon), or ``PVVAE_VIDEO_READER=ffmpeg``, or
decord mangles a file (it returns 4 or 6 "channels" for some frame widths whose rows it pads), or decord's frames
differ from ffmpeg's in the check ``probe`` runs on every video (``decord_misreads``: decord seeks inexactly in MPEG
program streams with B-frames and in H.264 with open GOPs, and skips the first frames of some program streams),
videos are read by the ffmpeg binary of imageio-ffmpeg instead (``ffmpeg_probe.iter_frames``: exact, sequential,
slower to seek). ``PVVAE_VIDEO_READER=decord`` trusts decord without the check.
What cannot be kept (an alpha channel, a non-square pixel aspect ratio) is reported in ``VideoInfo.notes``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.media import ffmpeg_probe

READER_ENV = "PVVAE_VIDEO_READER"  # "decord" or "ffmpeg"; unset: decord when it is installed

# Read: what decord / ffmpeg open (MPEG program streams included: Debian's sample clips use them).
# Written: the containers of media.writer (VIDEO_EXTS_WRITTEN there).
VIDEO_EXTS: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
IMAGE_EXTS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


class VideoReadError(PvvaeError, ValueError):
    """A file that cannot be read as a clip; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a file without decoding all of it. Images have ``num_frames == 1``."""

    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    is_image: bool
    reader: str = "decord"  # which reader decodes this file's frames: "decord" or "ffmpeg"
    notes: tuple[str, ...] = ()  # what the pixels read cannot keep (alpha, pixel aspect ratio), for a warning


def _env_reader() -> str:
    return os.environ.get(READER_ENV, "").strip().lower()


def video_reader() -> str:
    """The video reader to use: ``$PVVAE_VIDEO_READER`` if set, else decord when importable, else ffmpeg."""
    choice = _env_reader()
    if choice in ("decord", "ffmpeg"):
        return choice
    if choice:
        raise PvvaeError(f"{READER_ENV}={choice!r}: choose decord or ffmpeg (or unset it)")
    try:
        import decord  # noqa: F401
    except ImportError:
        return "ffmpeg"
    return "decord"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTS:
        return "video"
    if suffix in IMAGE_EXTS:
        return "image"
    supported = ", ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
    raise VideoReadError(path, f"unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "no such file")
    if not path.is_file():
        raise VideoReadError(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoReadError(path, "permission denied (not readable)")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _open_video(path: Path):
    """A decord ``VideoReader``; any decoder failure becomes a ``VideoReadError``."""
    import decord

    # ffmpeg's own log lines would interleave with progress bars; failures are reported by VideoReadError.
    decord.logging.set_level(decord.logging.QUIET)
    try:
        # Two threads: the machine this runs on is small, and decoding overlaps with model compute anyway.
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=2)
    except Exception as e:  # decord raises its own DECORDError / RuntimeError for corrupt input
        # decord's messages are internal checks ("st_nb >= 0"); ffmpeg can name the cause.
        why = ffmpeg_probe.diagnose(path) or f"cannot decode video ({type(e).__name__})"
        raise VideoReadError(path, why) from e
    if len(vr) == 0:
        raise VideoReadError(path, "video has no frames")
    return vr


def image_notes(img: np.ndarray) -> tuple[str, ...]:
    """What ``_to_rgb_uint8`` loses of this imageio image: a (not fully opaque) alpha channel."""
    if img.ndim == 3 and img.shape[2] in (2, 4):
        opaque = np.iinfo(img.dtype).max if img.dtype.kind == "u" else 1
        if (img[:, :, -1] != opaque).any():
            return ("its alpha channel (transparency) is dropped: the colour under transparent pixels is kept",)
    return ()


def _to_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """Any imageio image (gray, gray+alpha, RGB, RGBA; uint8 or uint16) -> uint8 ``(H, W, 3)``."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise VideoReadError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise VideoReadError(path, f"unexpected image shape {img.shape} (animated images are not supported)")
    channels = img.shape[2]
    if channels in (1, 2):  # gray (+ alpha): drop alpha, repeat gray
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA: drop alpha
        img = img[:, :, :3]
    elif channels != 3:
        raise VideoReadError(path, f"unexpected number of channels {channels}")
    return np.ascontiguousarray(img)


def _read_image_raw(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))
    except Exception as e:
        raise VideoReadError(path, f"cannot decode image ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


def _read_image(path: Path) -> np.ndarray:
    return _to_rgb_uint8(_read_image_raw(path), path)


# decord_misreads: how far into a file the check reads (ffmpeg decodes up to there), and the largest mean absolute
# difference (0..255) between decord's and ffmpeg's frame that counts as the same frame (both convert colours with
# libswscale; on the files measured, exact frames differed by 0.0 and misread ones by 14 to 78).
CHECK_FRAMES = 300
CHECK_TOLERANCE = 2.0


def decord_misreads(path: Path, vr, num_frames: int, height: int, width: int) -> str | None:
    """Why decord's frames of ``path`` cannot be trusted, or None when they match ffmpeg's sequential decode.

    decord 0.6 seeks to the wrong picture in some streams (MPEG program streams with B-frames, H.264 with open
    GOPs: Debian's ``cityCC0.mpg``, imageio's ``cockatoo.mp4``) and returns garbage or skips frames without an
    error. Checked: the first two frames, and by seeking (backwards too) the first two keyframes after frame 0 and
    a frame three past each, within the first ``CHECK_FRAMES`` frames, against ffmpeg's frames (decoded once, from
    the start). The cost is decoding up to the last checked frame once per file."""
    limit = min(num_frames, CHECK_FRAMES)
    keys = [int(k) for k in vr.get_key_indices() if 0 < k < limit][:2] or ([limit // 2] if limit > 4 else [])
    wanted = sorted({i for i in (0, 1) if i < limit} | {j for k in keys for j in (k, k + 3) if j < limit})
    try:
        truth = dict(zip(wanted, (f for chunk in ffmpeg_probe.iter_frames(path, wanted, height, width, 16)
                                  for f in chunk), strict=True))
    except ValueError as e:  # ffmpeg decodes fewer frames, or another size, than decord reports
        return f"ffmpeg disagrees with decord's index ({e})"
    fresh = _open_video(path)  # the probe's reader has decoded frame 0 already
    order = [k + 3 for k in keys] + keys[::-1] + [0, 1]  # forward seeks, then backward ones, then the start
    for i in dict.fromkeys(j for j in order if j in truth):
        try:
            got = fresh.get_batch([i]).asnumpy()[0]
        except Exception as e:  # noqa: BLE001 - decord's own failure: ffmpeg reads the file instead
            return f"decord cannot decode frame {i} ({type(e).__name__})"
        diff = float(np.abs(got.astype(np.int16) - truth[i]).mean()) if got.shape == truth[i].shape else math.inf
        if diff > CHECK_TOLERANCE:
            return f"decord's frame {i} differs from ffmpeg's by {diff:.1f} (mean absolute, 0..255)"
    return None


def _probe_video(path: Path) -> VideoInfo:
    head = ffmpeg_probe.read_header(path)
    if head.error or not head.has_video:  # name the cause before any reader tries
        raise VideoReadError(path, ffmpeg_probe.diagnose(path, head))
    notes = ()
    if head.sar is not None:
        notes = (f"its pixel aspect ratio {head.sar[0]}:{head.sar[1]} is not kept: frames are read and written with "
                 "square pixels (resize to the display size first to keep the picture's proportions)",)
    reader = video_reader()
    if reader == "decord":
        vr = _open_video(path)
        try:
            first = vr[0].shape
        except Exception as e:
            raise VideoReadError(path, ffmpeg_probe.diagnose(path) or
                                 f"cannot decode the first frame ({type(e).__name__})") from e
        num_frames, fps = len(vr), float(vr.get_avg_fps())
        h, w = int(first[0]), int(first[1])
        if first[2] != 3 or (_env_reader() != "decord" and decord_misreads(path, vr, num_frames, h, w)):
            # decord pads some rows (e.g. 48 or 24 pixels wide) and reports the padding as channels, and its get_batch
            # then fails; or it misreads the file. ffmpeg reads those files exactly.
            reader = "ffmpeg"
    if reader == "ffmpeg":
        h, w, fps = head.height, head.width, head.fps
        try:
            num_frames = ffmpeg_probe.count_frames(path)
        except Exception as e:  # noqa: BLE001 - ffmpeg's own failure, reported as the file's
            raise VideoReadError(path, ffmpeg_probe.diagnose(path) or f"cannot count frames ({e})") from e
        if num_frames == 0:
            raise VideoReadError(path, "video has no frames")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoReadError(path, f"invalid frame rate {fps}")
    return VideoInfo(path, num_frames, fps, h, w, False, reader, notes)


# probe's results for videos, keyed by the file's identity and the reader setting: the decord check decodes frames,
# and every read_clip probes its file (a training run reads thousands of windows from the same few files).
_PROBED: dict[tuple, VideoInfo] = {}
_PROBED_MAX = 4096


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video or image file. Raises ``VideoReadError`` naming the file."""
    path = Path(path)
    kind = _kind(path)
    _check_file(path)
    if kind == "image":
        raw = _read_image_raw(path)
        img = _to_rgb_uint8(raw, path)
        return VideoInfo(path, 1, 0.0, img.shape[0], img.shape[1], True, "imageio", image_notes(raw))
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino, _env_reader())
    info = _PROBED.get(key)
    if info is None:
        info = _probe_video(path)
        if len(_PROBED) >= _PROBED_MAX:
            _PROBED.clear()
        _PROBED[key] = info
    return info if info.path == path else dataclasses.replace(info, path=path)


def clip_indices(
    info: VideoInfo, start: int = 0, num_frames: int | None = None, stride: int = 1, fps: float | None = None
) -> tuple[list[int], float]:
    """Source frame indices of the selected clip, and its effective fps.

    ``start``: first source frame. ``stride``: take every ``stride``-th frame. ``fps``: resample to this frame
    rate instead (nearest source frame at times ``i / fps``; must not exceed the source rate; exclusive with
    ``stride``). ``num_frames``: at most this many frames (fewer if the clip ends first); ``None``: to the end.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and stride != 1:
        raise ValueError("give either a frame stride or a target fps, not both")
    if start >= info.num_frames:
        raise VideoReadError(info.path, f"start frame {start} is past the end ({info.num_frames} frames)")
    if info.is_image:
        return [0], info.fps
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if fps > info.fps + 1e-6:
            raise ValueError(f"target fps {fps:g} exceeds the source's {info.fps:g} fps ({info.path}); "
                             "frames would be duplicated")
        step = info.fps / fps
        indices = []
        i = 0
        while True:
            # Nearest source frame to time i / fps; the small epsilon keeps exact ratios (30 -> 15) on the grid.
            idx = start + int(math.floor(i * step + 0.5 - 1e-9))
            if idx >= info.num_frames or (num_frames is not None and len(indices) >= num_frames):
                break
            indices.append(idx)
            i += 1
        return indices, float(fps)
    stop = info.num_frames if num_frames is None else min(info.num_frames, start + num_frames * stride)
    return list(range(start, stop, stride)), info.fps / stride


def iter_clip(
    path: str | Path,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    fps: float | None = None,
    chunk_size: int = 16,
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Yield the selected frames as uint8 ``(n, H, W, 3)`` chunks of at most ``chunk_size`` frames.

    Memory is bounded by one chunk (plus decord's decoder state), whatever the clip length. Frame selection
    as in ``clip_indices``; the effective fps is ``clip_indices(...)[1]``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    info = info or probe(path)
    indices, _ = clip_indices(info, start, num_frames, stride, fps)
    if info.is_image:
        yield _read_image(path)[None]
        return
    if info.reader == "ffmpeg":
        try:
            yield from ffmpeg_probe.iter_frames(path, indices, info.height, info.width, chunk_size)
        except ValueError as e:
            raise VideoReadError(path, str(e)) from e
        return
    vr = _open_video(path)
    for i in range(0, len(indices), chunk_size):
        batch = indices[i : i + chunk_size]
        try:
            frames = vr.get_batch(batch).asnumpy()
        except Exception as e:
            why = ffmpeg_probe.diagnose(path) or f"{type(e).__name__}: the file may be damaged"
            raise VideoReadError(path, f"cannot decode frames {batch[0]}..{batch[-1]} ({why})") from e
        if frames.shape[0] != len(batch) or frames.shape[1:] != (info.height, info.width, 3):
            raise VideoReadError(path, f"decoder returned frames of shape {frames.shape}, expected "
                                       f"({len(batch)}, {info.height}, {info.width}, 3)")
        yield frames


def read_clip(
    path: str | Path, start: int = 0, num_frames: int | None = None, stride: int = 1, fps: float | None = None
) -> tuple[np.ndarray, float]:
    """Read the selected frames of a video or image: uint8 ``(T, H, W, 3)`` RGB and the effective fps.

    Images give ``T = 1`` and fps ``0.0``. Raises ``VideoReadError`` (file and reason) for unreadable input and
    ``ValueError`` for an invalid selection.
    """
    info = probe(path)
    _, eff_fps = clip_indices(info, start, num_frames, stride, fps)
    chunks = list(iter_clip(path, start, num_frames, stride, fps, chunk_size=64, info=info))
    return np.concatenate(chunks, axis=0), eff_fps


# ---------------------------------------------------------------------------------------------- writing
# ---------------------------------------------------------------------------------------------- tensors
def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float32 ``(3, T, H, W)`` in [-1, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W) uint8
    return x.float().div_(127.5).sub_(1.0).contiguous()


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """Float ``(3, T, H, W)`` in [-1, 1] (any float dtype or device) -> uint8 ``(T, H, W, 3)``, clamped, rounded."""
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"pixels must be (3, T, H, W), got shape {tuple(x.shape)}")
    y = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return y.permute(1, 2, 3, 0).contiguous().cpu().numpy()
