"""Batch runners behind ``pvvae encode`` / ``pvvae decode``: many files, resumable, failures collected.

Encoding overlaps I/O with compute: a reader thread probes, decodes and prepares the next clips' pixel chunks
into a small bounded queue while the model runs on the current chunk, so on a folder of clips the wall time
is close to the model's own compute time and memory stays bounded (a few chunks in flight, whatever the clip
lengths). Consecutive clips of identical geometry are stacked into batches of up to ``batch_size``.

Per-file problems (corrupt, empty, unreadable input; a model producing NaN) are recorded as failed
``Outcome``s and the batch goes on. Every output is written atomically.

Outputs are never written blindly:

- each output is claimed (``runtime.output_lock``) before it is checked and held until it is written, so runs
  sharing an output folder never write one file at once; the claim also makes it safe to delete temp files that a
  killed run left for that output (each output folder is listed for them once per run);
- an output claimed by another run is reported ``skipped`` (busy) when that run writes it with this run's model and
  options (its claim records their digest: identical runs share the work), and ``failed`` when it writes it
  otherwise: the file would not be what this run was asked for;
- an existing output is skipped only when it is up to date (encode: same input file, model and options; decode:
  same latent file, model and options, from the tag ``VideoWriter`` stamps on it); a stale one needs
  ``overwrite``; a file that pvvae did not write (a source video, model weights) is never replaced;
- at the end every output reported written is checked to still be this run's (``write_id``); one replaced by
  another run meanwhile is reported failed, never as success.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.codec.latents import (
    LatentFormatError,
    LatentMeta,
    load_latent,
    options_mismatch,
    read_meta,
    save_latent,
)
from pvvae_cli.codec.pipeline import ClipSource, Codec, EncodeOptions
from pvvae_cli.codec.tiling import TileSpec
from pvvae_cli.frames import latent_frame_count
from pvvae_cli.media.discovery import Job
from pvvae_cli.media.video_io import VideoReadError
from pvvae_cli.media.writer import read_tag
from pvvae_cli.runtime.atomic import StaleTemps, atomic_path
from pvvae_cli.runtime.output_lock import OutputLock
from pvvae_cli.runtime.progress import progress

LONG_CLIP_FRAMES = 64  # show a per-frame progress bar for clips longer than this
BUSY = "busy: another pvvae run is writing it"
DECODE_TAG = "pvvae-decode"


def new_write_id() -> str:
    return uuid.uuid4().hex[:16]


def options_key(*parts: object) -> str:
    """The digest a run records in its claims: what it writes (model and options). Runs with equal keys write equal
    outputs, so they may share an output folder."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_claim_key(codec: Codec, options: EncodeOptions) -> str:
    """``options_key`` of an encode: the model (config and weights) and the options that change the latents."""
    return options_key("encode", options.digest(codec.dtype), codec.config_hash, codec.weights_hash)


def claim_outcome(job: Job, lock: OutputLock, key: str) -> Outcome:
    """The outcome of a job whose output another run holds (``lock.try_acquire()`` failed): skipped as busy when the
    holder writes with ``key`` (or does not say: pvvae 0.10 or older), else failed."""
    holder = lock.holder
    if holder is None:
        return Outcome(job, "skipped", BUSY)
    if not holder.options or holder.options == key:
        return Outcome(job, "skipped", f"{BUSY} ({holder.describe()})")
    return Outcome(job, "failed", f"another pvvae run with different options ({holder.describe()}) is writing "
                                  f"{job.output}; runs sharing an output folder must use the same model and options")


class _Claims:
    """The outputs this run holds claims on (taken by the reader thread, released by the main thread), claimed
    with the digest ``key`` of what this run writes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._held: dict[Path, OutputLock] = {}
        self._mutex = threading.Lock()
        self._temps = StaleTemps()

    def claim(self, job: Job) -> Outcome | None:
        """None when ``job.output`` is now ours, else its outcome (busy: skipped or failed)."""
        lock = OutputLock(job.output, self.key)
        if not lock.try_acquire():
            return claim_outcome(job, lock, self.key)
        with self._mutex:
            self._held[job.output] = lock
        self._temps.remove(job.output)  # ours now: temp files beside it are a killed run's leftovers
        return None

    def release(self, path: Path) -> None:
        with self._mutex:
            lock = self._held.pop(path, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        with self._mutex:
            locks, self._held = list(self._held.values()), {}
        for lock in locks:
            lock.release()


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
    file (size and mtime), by this model (config and weights hash) with these options. ``meta`` is None when the
    file is not a pvvae latent file at all."""
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
        (meta.options_hash == options.digest(codec.dtype), options_mismatch(meta, options.digest, codec.dtype,
                                                                            codec.device)),
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

    def __init__(self, codec: Codec, jobs: list[Job], options: EncodeOptions, batch_size: int, claims: _Claims,
                 overwrite: bool, depth: int = 4):
        super().__init__(daemon=True, name="pvvae-reader")
        self.codec, self.jobs, self.options, self.batch_size = codec, jobs, options, batch_size
        self.claims, self.overwrite = claims, overwrite
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
                    busy = self.claims.claim(job)
                    if busy is not None:
                        self.put(("done", busy))
                        continue
                    verdict = self._existing(job) if job.output.exists() or job.output.is_symlink() else None
                except OSError as e:  # e.g. a subfolder that cannot be created
                    self.put(("failed", job, f"cannot write {job.output}: {e.strerror or e}"))
                    continue
                if verdict is not None:
                    self.put(("done", verdict))
                    continue
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

    def _existing(self, job: Job) -> Outcome | None:
        """The outcome for a job whose output exists, or None when it is to be (re-)encoded."""
        ok, why, meta = check_existing(self.codec, job, self.options)
        if meta is None:
            return Outcome(job, "failed", f"output {job.output} exists and is not a pvvae latent file ({why}); "
                                          "it is never replaced: move it or choose another --output")
        if ok and not self.overwrite:
            return Outcome(job, "skipped", "up to date", meta, _latent_shape(meta, self.codec))
        if not ok and not self.overwrite:
            return Outcome(job, "failed", f"output {job.output} exists but was made from {why}; "
                                          "pass --overwrite to replace it", meta)
        return None

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
    """Encode every job's input into its output latent file; returns one ``Outcome`` per job, in job order.
    Existing outputs: skipped when up to date, else failed unless ``overwrite``; never replaced when they are not
    latent files. Outputs claimed by another run are skipped (busy) when it encodes with this model and these
    options, else failed."""
    outcomes: dict[int, Outcome] = {}
    write_id = new_write_id()
    # weights_hash is computed here, not in the reader thread while the model runs
    claims = _Claims(encode_claim_key(codec, options))

    def record(o: Outcome) -> None:
        outcomes[id(o.job)] = o
        claims.release(o.job.output)
        bar.update(1)
        if on_outcome:
            on_outcome(o)

    bar = progress(total=len(jobs), desc="encode", unit="file", quiet=quiet)
    reader = _Reader(codec, jobs, options, max(1, batch_size), claims, overwrite)
    reader.start()
    try:
        while True:
            item = reader.q.get()
            if item is _END:
                break
            if item[0] == "done":
                record(item[1])
                continue
            if item[0] == "failed":
                record(Outcome(item[1], "failed", item[2]))
                continue
            _, group, sources = item
            plan = sources[0].plan
            frames_bar = progress(total=plan.num_frames, desc=group[0].rel.name[:30], unit="frame", leave=False,
                                  quiet=quiet or plan.num_frames <= LONG_CLIP_FRAMES)
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
                    save_latent(job.output, enc.latent, enc.meta.replace(write_id=write_id), enc.mean, enc.logvar)
                    record(Outcome(job, "encoded", "", enc.meta, tuple(enc.latent.shape),
                                   warnings=list(src.info.notes)))
                except Exception as e:  # noqa: BLE001 - e.g. unwritable output folder
                    record(Outcome(job, "failed", f"cannot write {job.output}: {_reason(e)}"))
    finally:
        reader.stop.set()
        reader.join(timeout=5)
        claims.release_all()
        bar.close()
    return [_verify(outcomes[id(j)], "encoded", write_id, _latent_write_id) for j in jobs]


def _latent_write_id(path: Path) -> str | None:
    try:
        return read_meta(path).write_id
    except LatentFormatError:
        return None


def _verify(o: Outcome, written: str, write_id: str, read_id: Callable[[Path], str | None]) -> Outcome:
    """A written outcome whose file now carries another run's ``write_id`` becomes a failure."""
    if o.status != written or read_id(o.job.output) == write_id:
        return o
    return Outcome(o.job, "failed", f"{o.job.output} was replaced by another pvvae run after this run wrote it "
                                    "(runs sharing an output folder should use the same options)", o.meta, o.shape)


class _GroupChunks:
    """The current group's pixel chunks from the reader queue (an iterable for ``Codec.encode_stream``)."""

    def __init__(self, q: queue.Queue, bar) -> None:
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
    chunk_latents: int = 1,
) -> list[Outcome]:
    """Decode every job's latent file into its output video; returns one ``Outcome`` per job, in order.
    ``chunk_latents``: latent frames per decode step (speed and memory only: the output is the same).

    An existing output is skipped when this decode made it from the same latent file with the same model and
    options (its tag says so), else fails unless ``overwrite``. A file pvvae decode did not write, or the source
    video the latent was encoded from, is never replaced. Outputs claimed by another run are skipped (busy) when it
    decodes with these options, else failed."""
    outcomes = []
    write_id = new_write_id()
    options = {"source_size": source_size, "tile": tile, "tile_spec": (tile_spec.tile, tile_spec.overlap)
               if tile_spec else None, "crf": crf, "dtype": str(codec.dtype), "config": codec.config_hash,
               "weights": codec.weights_hash}
    key = options_key("decode", options)
    temps = StaleTemps()
    bar = progress(total=len(jobs), desc="decode", unit="file", quiet=quiet)
    try:
        for job in jobs:
            lock = OutputLock(job.output, key)
            try:
                claimed = lock.try_acquire()
            except OSError as e:  # e.g. a subfolder that cannot be created
                claimed, o = None, Outcome(job, "failed", f"cannot write {job.output}: {e.strerror or e}")
            if claimed is False:
                o = claim_outcome(job, lock, key)
            elif claimed:
                try:
                    temps.remove(job.output)
                    o = _decode_one(codec, job, overwrite, force, source_size, tile, tile_spec, crf, options,
                                    write_id, chunk_latents)
                except Exception as e:  # noqa: BLE001 - report, go on
                    o = Outcome(job, "failed", _reason(e))
                finally:
                    lock.release()
            outcomes.append(o)
            bar.update(1)
            if on_outcome:
                on_outcome(o)
    finally:
        bar.close()
    return [_verify(o, "decoded", write_id, _decoded_write_id) for o in outcomes]


def decode_key(latent_path: Path, meta: LatentMeta, options: dict) -> str:
    """Identity of a decoded output: the latent file's content (its metadata, whose ``write_id`` changes with every
    encode, and its size; not its mtime, so a copied latent folder still matches) and everything of the decode
    that changes the pixels."""
    d = {"latent": meta.to_strings(), "bytes": latent_path.stat().st_size, **options}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _parse_tag(tag: str | None) -> tuple[str, str] | None:
    """``pvvae-decode:KEY:WRITE_ID`` -> ``(KEY, WRITE_ID)``; None for anything else."""
    parts = (tag or "").split(":")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == DECODE_TAG else None


def _decoded_write_id(path: Path) -> str | None:
    parsed = _parse_tag(read_tag(path))
    return parsed[1] if parsed else None


def _is_source_of(path: Path, meta: LatentMeta) -> bool:
    """Whether ``path`` is (by size and modification time) the file ``meta``'s latent was encoded from."""
    try:
        st = path.stat()
    except OSError:
        return False
    return path.is_file() and st.st_size == meta.source_bytes and st.st_mtime_ns == meta.source_mtime_ns


def _decode_one(codec: Codec, job: Job, overwrite: bool, force: bool, source_size: bool, tile: str,
                tile_spec: TileSpec | None, crf: int, options: dict, write_id: str, chunk_latents: int = 1) -> Outcome:
    latent, meta = load_latent(job.source)
    key = decode_key(job.source, meta, options)
    out = job.output
    if out.exists() or out.is_symlink():
        if _is_source_of(out, meta):
            return Outcome(job, "failed", f"output {out} is the source video {meta.source} of this latent: it is "
                                          "never overwritten; choose another --output")
        tag = _parse_tag(read_tag(out))
        if tag is None:
            what = "folder" if out.is_dir() else "file"
            return Outcome(job, "failed", f"output {out} exists and is a {what} pvvae decode did not write (a source "
                                          "video?): it is never replaced; move it or choose another --output")
        if tag[0] == key and not overwrite:
            return Outcome(job, "skipped", "up to date", meta, tuple(latent.shape))
        if not overwrite:
            return Outcome(job, "failed", f"output {out} exists but was decoded from another latent file or with "
                                          "other options; pass --overwrite to replace it", meta)
    warnings = codec.check_latent(latent, meta, force)
    codec.decode_to_file(latent, meta, out, source_size, tile, tile_spec, chunk_latents=chunk_latents, crf=crf,
                         tag=f"{DECODE_TAG}:{key}:{write_id}", notes=warnings)
    return Outcome(job, "decoded", "", meta, tuple(latent.shape), warnings)
