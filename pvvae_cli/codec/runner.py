"""Batch runners behind ``pvvae encode`` / ``pvvae decode``: many files, resumable, failures collected.

Encoding overlaps I/O with compute: a reader thread probes, decodes and prepares the next clips' pixel chunks
into a small bounded queue while the model runs on the current chunk, so on a folder of clips the wall time
is close to the model's own compute time and memory stays bounded (a few chunks in flight, whatever the clip
lengths). Consecutive clips of identical geometry are stacked into batches of up to ``batch_size``.

Per-file problems (corrupt, empty, unreadable input; a model producing NaN) are recorded as failed
``Outcome``s and the batch goes on. Every output is written atomically.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from pvvae_cli.codec.latents import LatentFormatError, LatentMeta, load_latent, read_meta, save_latent
from pvvae_cli.codec.pipeline import ClipSource, Codec, EncodeOptions
from pvvae_cli.codec.tiling import TileSpec
from pvvae_cli.frames import latent_frame_count
from pvvae_cli.media.discovery import Job
from pvvae_cli.media.video_io import VideoReadError
from pvvae_cli.runtime.atomic import atomic_path

LONG_CLIP_FRAMES = 64  # show a per-frame progress bar for clips longer than this


@dataclass
class Outcome:
    """What happened to one job: ``status`` is ``encoded``/``decoded``, ``skipped`` or ``failed`` (``reason``)."""

    job: Job
    status: str
    reason: str = ""
    meta: LatentMeta | None = None
    shape: tuple[int, ...] | None = None
    warnings: list[str] = field(default_factory=list)

    def manifest_record(self) -> dict:
        m = self.meta
        return {
            "input": str(self.job.source), "output": str(self.job.output), "status": self.status,
            "latent_shape": list(self.shape) if self.shape else None, "fps": m.fps, "frames": m.num_frames,
            "height": m.height, "width": m.width, "encoded_frames": m.encoded_frames,
            "encoded_height": m.encoded_height, "encoded_width": m.encoded_width,
        }


def write_manifest(path: Path, outcomes: list[Outcome]) -> int:
    """JSONL, one line per successful output (encoded or skipped), written atomically; returns the line count."""
    lines = [json.dumps(o.manifest_record()) for o in outcomes if o.status != "failed" and o.meta is not None]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def _reason(e: BaseException) -> str:
    if isinstance(e, VideoReadError):
        return e.reason
    return str(e) or type(e).__name__


# ---------------------------------------------------------------------------------------------- encoding
def check_existing(codec: Codec, job: Job, options: EncodeOptions) -> tuple[bool, str, LatentMeta | None]:
    """``(matches, why_not, meta)`` for an existing output: it matches when it was made from this very input
    file (size and mtime), by this model (config and weights hash) with these options."""
    try:
        meta = read_meta(job.output)
    except LatentFormatError as e:
        return False, str(e), None
    try:
        stat = job.source.stat()
    except OSError as e:
        return False, f"cannot stat the input ({e.strerror})", meta
    checks = [
        (meta.source_bytes == stat.st_size and meta.source_mtime_ns == stat.st_mtime_ns, "the input file changed"),
        (meta.config_hash == codec.config_hash and meta.weights_hash == codec.weights_hash, "another model"),
        (meta.options_hash == options.digest(codec.dtype), "other encode options"),
    ]
    for ok, why in checks:
        if not ok:
            return False, why, meta
    return True, "", meta


_END = object()


class _Aborted(Exception):
    """The reader hit an error in the middle of a group's clips."""


class _Reader(threading.Thread):
    """Producer: for each group of jobs put ``("start", group, sources)``, then ``("chunk", tensor)`` items of
    shape ``(B, 3, n, He, We)``, then ``("end",)``; or ``("abort", reason)`` after a mid-clip error; and
    ``("failed", job, reason)`` for jobs that fail before reading. Finally ``_END``."""

    def __init__(self, codec: Codec, jobs: list[Job], options: EncodeOptions, batch_size: int, depth: int = 4):
        super().__init__(daemon=True, name="pvvae-reader")
        self.codec, self.jobs, self.options, self.batch_size = codec, jobs, options, batch_size
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise SystemExit  # consumer went away: end the thread quietly

    def run(self) -> None:
        try:
            pending: list[tuple[Job, ClipSource]] = []
            for job in self.jobs:
                try:
                    src = self.codec.plan_source(job.source, self.options)
                except Exception as e:  # noqa: BLE001 - any per-file problem is reported, the batch goes on
                    self.put(("failed", job, _reason(e)))
                    continue
                if pending and (not self._same_shape(pending[0][1], src) or len(pending) >= self.batch_size):
                    self._emit(pending)
                    pending = []
                pending.append((job, src))
            if pending:
                self._emit(pending)
            self.put(_END)
        except SystemExit:
            return

    @staticmethod
    def _same_shape(a: ClipSource, b: ClipSource) -> bool:
        return a.plan == b.plan

    def _emit(self, group: list[tuple[Job, ClipSource]]) -> None:
        self.put(("start", [j for j, _ in group], [s for _, s in group]))
        try:
            streams = [self.codec.read_pixels(src, self.options) for _, src in group]
            for parts in zip(*streams, strict=True):
                self.put(("chunk", torch.stack(parts) if len(parts) > 1 else parts[0][None]))
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001
            self.put(("abort", _reason(e)))
            if len(group) == 1:
                self.put(("failed", group[0][0], _reason(e)))
            else:  # find the culprit: redo the group one clip at a time
                for item in group:
                    self._emit([item])
            return
        self.put(("end",))


def run_encode(
    codec: Codec,
    jobs: list[Job],
    options: EncodeOptions,
    overwrite: bool = False,
    batch_size: int = 1,
    quiet: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Encode every job's input into its output latent file; returns one ``Outcome`` per job, in job order."""
    outcomes: dict[int, Outcome] = {}
    todo: list[Job] = []

    def record(o: Outcome) -> None:
        outcomes[id(o.job)] = o
        bar.update(1)
        if on_outcome:
            on_outcome(o)

    bar = tqdm(total=len(jobs), desc="encode", unit="file", disable=quiet, dynamic_ncols=True)
    for job in jobs:
        if job.output.exists() and not overwrite:
            ok, why, meta = check_existing(codec, job, options)
            if ok:
                record(Outcome(job, "skipped", "up to date", meta, _latent_shape(meta, codec)))
            else:
                record(Outcome(job, "failed", f"output {job.output} exists but was made from {why}; "
                                              "pass --overwrite to replace it", meta))
            continue
        todo.append(job)

    reader = _Reader(codec, todo, options, max(1, batch_size))
    reader.start()
    try:
        while True:
            item = reader.q.get()
            if item is _END:
                break
            if item[0] == "failed":
                record(Outcome(item[1], "failed", item[2]))
                continue
            _, group, sources = item
            plan = sources[0].plan
            frames_bar = tqdm(total=plan.num_frames, desc=group[0].rel.name[:30], unit="frame", leave=False,
                              disable=quiet or plan.num_frames <= LONG_CLIP_FRAMES, dynamic_ncols=True)
            chunks = _GroupChunks(reader.q, frames_bar)
            try:
                mean, logvar = codec.encode_stream(chunks, plan, options)
            except _Aborted:
                continue  # the reader reports the failing clip and retries the rest
            except Exception as e:  # noqa: BLE001 - e.g. NaN under fp16: fail these clips, go on
                chunks.drain()
                for job in group:
                    record(Outcome(job, "failed", _reason(e)))
                continue
            finally:
                frames_bar.close()
            for b, (job, src) in enumerate(zip(group, sources, strict=True)):
                try:
                    enc = codec.finish(mean[b], logvar[b], src, options, job.rel.as_posix())
                    save_latent(job.output, enc.latent, enc.meta, enc.mean, enc.logvar)
                    record(Outcome(job, "encoded", "", enc.meta, tuple(enc.latent.shape),
                                   warnings=list(src.info.notes)))
                except Exception as e:  # noqa: BLE001 - e.g. unwritable output folder
                    record(Outcome(job, "failed", f"cannot write {job.output}: {_reason(e)}"))
    finally:
        reader.stop.set()
        bar.close()
    return [outcomes[id(j)] for j in jobs]


class _GroupChunks:
    """The current group's pixel chunks from the reader queue (an iterable for ``Codec.encode_stream``)."""

    def __init__(self, q: queue.Queue, bar: tqdm) -> None:
        self.q, self.bar, self.finished = q, bar, False

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            item = self.q.get()
            if item[0] == "chunk":
                self.bar.update(item[1].shape[2])
                yield item[1]
            elif item[0] in ("end", "abort"):
                self.finished = True
                if item[0] == "abort":
                    raise _Aborted(item[1])
                return
            else:
                raise AssertionError(f"unexpected reader item {item[0]!r}")

    def drain(self) -> None:
        """Skip the rest of this group's items after a model failure."""
        while not self.finished:
            if self.q.get()[0] in ("end", "abort"):
                self.finished = True


def _latent_shape(meta: LatentMeta | None, codec: Codec) -> tuple[int, ...] | None:
    if meta is None:
        return None
    cfg = codec.vae.config
    s, t = cfg.spatial_compression, cfg.temporal_compression
    return (meta.latent_channels, latent_frame_count(meta.encoded_frames, t), meta.encoded_height // s,
            meta.encoded_width // s)


# ---------------------------------------------------------------------------------------------- decoding
def decoded_suffix(fmt: str, meta_fps: float) -> str:
    """Output suffix for a latent: ``.mp4`` or a PNG-frame folder (``""``); image sources give ``.png``."""
    if meta_fps <= 0:
        return ".png"
    return ".mp4" if fmt == "mp4" else ""


def run_decode(
    codec: Codec,
    jobs: list[Job],
    overwrite: bool = False,
    force: bool = False,
    source_size: bool = True,
    tile: str = "auto",
    tile_spec: TileSpec | None = None,
    crf: int = 12,
    quiet: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Decode every job's latent file into its output video; returns one ``Outcome`` per job, in order.
    Existing outputs are skipped unless ``overwrite``."""
    outcomes = []
    bar = tqdm(total=len(jobs), desc="decode", unit="file", disable=quiet, dynamic_ncols=True)
    try:
        for job in jobs:
            try:
                if job.output.exists() and not overwrite:
                    o = Outcome(job, "skipped", "output exists (pass --overwrite to replace it)")
                else:
                    latent, meta = load_latent(job.source)
                    warnings = codec.check_latent(latent, meta, force)
                    codec.decode_to_file(latent, meta, job.output, source_size, tile, tile_spec, crf=crf)
                    o = Outcome(job, "decoded", "", meta, tuple(latent.shape), warnings)
            except Exception as e:  # noqa: BLE001 - report, go on
                o = Outcome(job, "failed", _reason(e))
            outcomes.append(o)
            bar.update(1)
            if on_outcome:
                on_outcome(o)
    finally:
        bar.close()
    return outcomes
