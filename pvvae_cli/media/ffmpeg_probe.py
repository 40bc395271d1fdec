"""What the ffmpeg binary of imageio-ffmpeg says about a media file, and the fallback video reader built on it.

decord is the fast reader (exact random access), but it has no wheel for every platform (macOS on Apple silicon),
its error messages are internal checks, and it does not report the pixel aspect ratio or container tags. The
ffmpeg binary shipped in the imageio-ffmpeg wheel is always there, so it answers those questions:

- ``read_header``: streams, size, fps, sample aspect ratio and container metadata from ``ffmpeg -i`` (header only,
  ~15 ms);
- ``diagnose``: the cause of a file decord cannot open, in words (truncated, audio only, not a video);
- ``count_frames`` and ``iter_frames``: a sequential reader, used where decord is missing or returns frames it
  mangled. Frames are uint8 ``(n, H, W, 3)`` RGB, as from ``video_io``.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaHeader:
    """``ffmpeg -i`` of one file. ``error``: ffmpeg's reason when it could not open the file at all."""

    has_video: bool = False
    has_audio: bool = False
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sar: tuple[int, int] | None = None  # sample (pixel) aspect ratio when not 1:1
    pix_fmt: str = ""
    metadata: dict[str, str] = field(default_factory=dict)  # container tags (title, comment, ...)
    error: str = ""


# The pixel format may carry colour details in parentheses with commas of their own, as most camera and phone
# files do: "Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1920x1080 [SAR 1:1 ...".
_VIDEO = re.compile(r"Stream #\S+: Video: [^,]+(?:\([^)]*\))?, (?P<pix>[a-z0-9_]+)(?:\([^)]*\))?[^,]*, "
                    r"(?P<w>\d+)x(?P<h>\d+)(?: \[SAR (?P<sn>\d+):(?P<sd>\d+))?")
_FPS = re.compile(r"Stream #\S+: Video: .*?, (?P<fps>[\d.]+) fps")
_META = re.compile(r"^\s{4}(?P<key>\w+)\s*: (?P<value>.*)$")


def read_header(path: str | Path) -> MediaHeader:
    """Parse ``ffmpeg -i path`` (reads the header, decodes nothing; ~15 ms). Cached per file version (path, size,
    mtime): a training loader that reads clips of the same files again and again runs ffmpeg once per file."""
    try:
        st = os.stat(path)
        version = (st.st_size, st.st_mtime_ns)
    except OSError:
        version = None
    return _read_header(str(path), version)


@functools.lru_cache(maxsize=4096)
def _read_header(path: str, _version: tuple[int, int] | None) -> MediaHeader:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path], capture_output=True,
                         text=True, errors="replace", timeout=60)
    return parse_header(res.stderr)


def parse_header(text: str) -> MediaHeader:
    """``MediaHeader`` from the text ``ffmpeg -i`` writes to stderr."""
    lines = text.splitlines()
    if not any(line.lstrip().startswith("Input #") for line in lines):
        errors = [_strip_ctx(line) for line in lines if line.strip() and not line.startswith("At least one output")]
        errors = [e for e in errors if not e.startswith(("Error opening input file", "Error opening input files"))]
        return MediaHeader(error=" / ".join(dict.fromkeys(errors)) or "unknown error")
    meta: dict[str, str] = {}
    # Container tags come right after "Input #0" (indented 4), before the first stream (whose tags indent 6).
    in_container = False
    for line in lines:
        if line.startswith("Input #"):
            in_container = True
        elif line.startswith("  Duration") or line.lstrip().startswith("Stream #"):
            in_container = False
        elif in_container and (m := _META.match(line)):
            meta[m["key"]] = m["value"]
    video = _VIDEO.search(text)
    fps = _FPS.search(text)
    sar = None
    if video and video["sn"] and video["sn"] != video["sd"] and "0" not in (video["sn"], video["sd"]):
        sar = (int(video["sn"]), int(video["sd"]))  # 72:72 (JPEG pixel density in dpi) is square too
    return MediaHeader(
        has_video=video is not None, has_audio=re.search(r"Stream #\S+: Audio:", text) is not None,
        width=int(video["w"]) if video else 0, height=int(video["h"]) if video else 0,
        fps=float(fps["fps"]) if fps else 0.0, sar=sar, pix_fmt=video["pix"] if video else "", metadata=meta,
    )


def _strip_ctx(line: str) -> str:
    # "[in#0 @ 0x55a4...] moov atom not found" -> "moov atom not found"
    return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())


def diagnose(path: str | Path, head: MediaHeader | None = None) -> str:
    """Why a video file cannot be read, for a user: the cause when ffmpeg can tell, else its own words; ``""``
    when ffmpeg sees nothing wrong in the header. ``head``: an already read ``read_header(path)``."""
    if head is None:
        try:
            head = read_header(path)
        except (OSError, subprocess.SubprocessError) as e:
            return f"cannot run ffmpeg to inspect it ({e})"
    if head.error:
        if "moov atom not found" in head.error:
            return ("truncated or unfinished file ('moov atom not found': the recording or copy was cut off before it "
                    "was finished, or it is not a video)")
        if "Invalid data found" in head.error:
            return "not a readable video file (corrupt, or not a video format ffmpeg knows)"
        return head.error
    if not head.has_video:
        return "has no video stream (audio only)" if head.has_audio else "has no video stream"
    return ""


def count_frames(path: str | Path) -> int:
    """Exact frame count by decoding the whole stream (the fallback reader's probe; decord reads the index)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def iter_frames(path: str | Path, indices: Sequence[int], height: int, width: int,
                chunk_size: int) -> Iterator[np.ndarray]:
    """Frames ``indices`` (ascending) of a video, decoded sequentially from the start, as uint8 ``(n, H, W, 3)``
    chunks of at most ``chunk_size`` frames. Raises ``ValueError`` when the file ends before the last index."""
    import imageio_ffmpeg

    if not indices:
        return
    wanted = iter(indices)
    want = next(wanted)
    # Every decoded frame once, in order: ffmpeg's default output timing would duplicate frames to a constant rate
    # (a variable-rate AVI of 68 frames came out as 449; an MP4 whose video starts late, with five copies of its
    # first frame), so frame i would not be the file's frame i.
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    try:
        meta = next(gen)
        w, h = meta["size"]
        if (h, w) != (height, width):
            raise ValueError(f"ffmpeg decodes frames of {h}x{w}, expected {height}x{width}")
        buf: list[np.ndarray] = []
        for i, raw in enumerate(gen):
            while want == i:  # the same index may be wanted twice
                buf.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
                if len(buf) == chunk_size:
                    yield np.stack(buf)
                    buf = []
                want = next(wanted, -1)
            if want < 0:
                break
        if buf:
            yield np.stack(buf)
        if want >= 0:
            raise ValueError(f"the file ends before frame {want}")
    finally:
        gen.close()
