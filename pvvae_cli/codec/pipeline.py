"""Streaming encode/decode of whole clips: the library behind ``pvvae encode`` and ``pvvae decode``.

``Codec`` binds a model (any ``models.protocol.VideoAutoencoder``: it uses nothing else of it) to a device and a
compute dtype and turns

- a clip (file or frame chunks) into a latent file's content: the clip is read, planned (``framing``),
  cut into model chunks (first frame alone, then ``tc * chunk_latents`` frames), and encoded chunk by chunk
  with ``encode_chunk`` and a stream of the model (one per spatial tile when tiled), so memory does not grow
  with length;
- a latent (plus its ``LatentMeta``) back into uint8 frames, one or a few latent frames at a time
  (``decode_chunk``), restoring the original frame count and size, streamed straight into a ``VideoWriter``.

Layouts: pixels float ``(B, 3, T, H, W)`` in [-1, 1]; latents ``(B, C, t, h, w)``; frames uint8 ``(T, H, W, 3)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pvvae_cli import __version__
from pvvae_cli.codec.framing import FramePlan, pad_frames, plan_frames
from pvvae_cli.codec.latents import LatentMeta, config_hash, weights_hash
from pvvae_cli.codec.tiling import TileGrid, TileSpec, use_tiling
from pvvae_cli.errors import PvvaeError
from pvvae_cli.frames import check_frame_count, latent_frame_count
from pvvae_cli.media.video_io import (
    VideoInfo,
    clip_indices,
    frames_to_tensor,
    iter_clip,
    probe,
    tensor_to_frames,
)
from pvvae_cli.media.writer import VideoWriter
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.models.protocol import VideoAutoencoder
from pvvae_cli.runtime.device import autocast

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class NonFiniteError(PvvaeError, RuntimeError):
    """The model produced NaN/inf (typically fp16 overflow); the message says where and what to use instead."""


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that decides what a latent file contains (hashed into ``options_hash`` for resume checks).

    Frame selection: ``start``, ``num_frames`` (None: to the end), ``stride`` or ``fps``. Geometry: ``size``
    ``(H, W)`` or ``max_size``, then ``fit`` (pad/crop/resize). ``tile``: auto/on/off with ``tile_size`` and
    ``tile_overlap`` in pixels. ``sample``: posterior sample (seeded by ``seed``) instead of the mode.
    ``normalize``: store normalised latents (None: when the model has latent statistics). ``save_moments``:
    also store the posterior ``mean``/``logvar``. ``chunk_latents``: latent frames per streamed chunk (speed
    and memory only: the result is the same).
    """

    start: int = 0
    num_frames: int | None = None
    stride: int = 1
    fps: float | None = None
    size: tuple[int, int] | None = None
    max_size: int | None = None
    fit: str = "pad"
    tile: str = "auto"
    tile_size: int = 512
    tile_overlap: int = 128
    sample: bool = False
    seed: int = 0
    normalize: bool | None = None
    save_moments: bool = False
    chunk_latents: int = 1

    def digest(self, dtype: torch.dtype) -> str:
        d = dataclasses.asdict(self)
        d.pop("chunk_latents")  # does not change the result
        d["dtype"] = DTYPE_NAMES[dtype]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class EncodedClip:
    """The content of one latent file: ``latent`` float32 ``(C, t, h, w)`` (and optionally the posterior)."""

    latent: torch.Tensor
    meta: LatentMeta
    mean: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


@dataclass(frozen=True)
class ClipSource:
    """A planned clip: the file, what is read from it, and how it becomes model input."""

    path: Path
    info: VideoInfo
    indices: list[int]
    fps: float
    plan: FramePlan


def model_chunks(frames: Iterable[torch.Tensor], plan: FramePlan, chunk_frames: int) -> Iterator[torch.Tensor]:
    """Regroup pixel chunks ``(B, 3, n, H, W)`` of any lengths into model chunks: the first frame alone, then
    ``chunk_frames`` frames (a multiple of the model's ``tc``), the last chunk completed with ``plan.frame_pad``
    copies of the last frame. Holds at most one model chunk plus one input chunk."""
    buf: list[torch.Tensor] = []
    have = 0
    want = 1
    seen = 0
    for x in frames:
        seen += x.shape[2]
        buf.append(x)
        have += x.shape[2]
        while have >= want:
            cat = torch.cat(buf, dim=2) if len(buf) > 1 else buf[0]
            yield cat[:, :, :want]
            rest = cat[:, :, want:]
            buf, have = ([rest], rest.shape[2]) if rest.shape[2] else ([], 0)
            want = chunk_frames
    if seen != plan.num_frames:
        raise ValueError(f"expected {plan.num_frames} frames, the reader gave {seen}")
    if have or plan.frame_pad:
        tail = torch.cat(buf, dim=2) if buf else None
        if tail is None:
            raise AssertionError("frame padding without frames to pad")  # plan.frame_pad > 0 implies a remainder
        yield pad_frames(tail, plan.frame_pad)


class Codec:
    """A model on a device with a compute dtype, plus the identity recorded in latent files.

    ``model_name``: how the model was given (weights folder, repo id or ``preset:NAME``); ``dtype``: compute
    precision (fp32, bf16 or fp16 through autocast; weights stay fp32). Every output is checked for NaN/inf.
    """

    def __init__(self, vae: VideoAutoencoder, model_name: str, device: torch.device, dtype: torch.dtype) -> None:
        self.vae = vae.eval().to(device)
        self.model_name = model_name
        self.device = device
        self.dtype = dtype
        self.config_hash = config_hash(vae.config)
        self._weights_hash: str | None = None

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = weights_hash(self.vae)
        return self._weights_hash

    @property
    def spatial_factor(self) -> int:
        return self.vae.config.spatial_compression

    # ------------------------------------------------------------------ planning
    def plan_source(self, path: str | Path, options: EncodeOptions, info: VideoInfo | None = None) -> ClipSource:
        """Probe ``path`` and decide the frames to read and the geometry. Raises ``VideoReadError``/``ValueError``."""
        path = Path(path)
        info = info or probe(path)
        indices, fps = clip_indices(info, options.start, options.num_frames, options.stride, options.fps)
        cfg = self.vae.config
        plan = plan_frames(
            len(indices), info.height, info.width, size=options.size, max_size=options.max_size, fit=options.fit,
            spatial_factor=cfg.spatial_compression, temporal_factor=cfg.temporal_compression,
        )
        return ClipSource(path, info, indices, fps, plan)

    def read_pixels(self, source: ClipSource, options: EncodeOptions, read_chunk: int = 16) -> Iterator[torch.Tensor]:
        """The planned clip as model-geometry pixel chunks ``(3, n, He, We)`` float32 in [-1, 1] (no time padding)."""
        for frames in iter_clip(source.path, options.start, options.num_frames, options.stride, options.fps,
                                chunk_size=read_chunk, info=source.info):
            yield source.plan.apply(frames_to_tensor(frames))

    # ------------------------------------------------------------------ encoding
    def encode_stream(
        self, chunks: Iterable[torch.Tensor], plan: FramePlan, options: EncodeOptions
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode pixel chunks ``(B, 3, n, He, We)`` of one (batch of) clip(s) following ``plan``; returns the
        posterior ``(mean, logvar)``, each float32 ``(B, C, t, h, w)`` on the CPU."""
        cfg = self.vae.config
        chunk_frames = cfg.temporal_compression * options.chunk_latents
        spec = TileSpec(options.tile_size, options.tile_overlap)
        tiled = use_tiling(options.tile, plan.encoded_height, plan.encoded_width, spec)
        s = cfg.spatial_compression
        grid = TileGrid(plan.encoded_height // s, plan.encoded_width // s, spec, s) if tiled else None
        streams = grid.new_streams(self.vae) if grid is not None else [self.vae.new_stream()]
        means, logvars = [], []
        with torch.inference_mode(), autocast(self.device, self.dtype):
            for i, x in enumerate(model_chunks(chunks, plan, chunk_frames)):
                x = x.to(self.device, non_blocking=True)
                if grid is not None:
                    post = grid.encode(self.vae, x, streams)
                else:
                    post = self.vae.encode_chunk(x, streams[0])
                mean, logvar = post.mean.float(), post.logvar.float()
                self._check_finite(mean, f"latent chunk {i}")
                self._check_finite(logvar, f"latent chunk {i}")
                means.append(mean.cpu())
                logvars.append(logvar.cpu())
        return torch.cat(means, dim=2), torch.cat(logvars, dim=2)

    def finish(
        self, mean: torch.Tensor, logvar: torch.Tensor, source: ClipSource, options: EncodeOptions, rel: str
    ) -> EncodedClip:
        """Posterior of one clip ``(C, t, h, w)`` -> the latent file content (mode or sample, normalised or not).
        A sample is seeded by ``options.seed`` and the clip's relative path: reproducible, different per clip."""
        post = DiagonalGaussian(mean, logvar)
        if options.sample:
            seed = int(hashlib.sha256(f"{options.seed}:{rel}".encode()).hexdigest()[:15], 16)
            z = post.sample(torch.Generator().manual_seed(seed))
        else:
            z = post.mode()
        normalize = options.normalize if options.normalize is not None else self.vae.config.latents_mean is not None
        if normalize:
            if self.vae.config.latents_mean is None:
                raise ValueError(f"{self.model_name} has no latent statistics (latents_mean/std): cannot normalise")
            z = self.vae.normalize_latents(z[None])[0]
        moments = (mean, logvar) if options.save_moments else (None, None)
        return EncodedClip(z.float(), self.meta_for(source, options, rel, normalize), *moments)

    def meta_for(self, source: ClipSource, options: EncodeOptions, rel: str, normalized: bool) -> LatentMeta:
        plan, info = source.plan, source.info
        spec = TileSpec(options.tile_size, options.tile_overlap)
        stat = source.path.stat()
        return LatentMeta(
            model=self.model_name, config_hash=self.config_hash, latent_channels=self.vae.config.latent_channels,
            model_tag=self.vae.config.tag, normalized=normalized, posterior="sample" if options.sample else "mode",
            source=rel, fps=source.fps, num_frames=plan.num_frames, height=plan.height, width=plan.width,
            encoded_frames=plan.encoded_frames, encoded_height=plan.encoded_height, encoded_width=plan.encoded_width,
            frame_pad=plan.frame_pad, frame_start=options.start, frame_stride=options.stride,
            target_fps=options.fps, source_fps=info.fps, source_num_frames=info.num_frames, resize=plan.resize,
            fit=plan.fit, pad=plan.pad, crop=plan.crop,
            tiled=use_tiling(options.tile, plan.encoded_height, plan.encoded_width, spec),
            dtype=DTYPE_NAMES[self.dtype], weights_hash=self.weights_hash, source_bytes=stat.st_size,
            source_mtime_ns=stat.st_mtime_ns, options_hash=options.digest(self.dtype), pvvae_version=__version__,
        )

    def encode_file(self, path: str | Path, options: EncodeOptions, rel: str | None = None) -> EncodedClip:
        """Encode one video or image file (streaming; memory bounded by one chunk)."""
        source = self.plan_source(path, options)
        chunks = (x[None] for x in self.read_pixels(source, options))
        mean, logvar = self.encode_stream(chunks, source.plan, options)
        return self.finish(mean[0], logvar[0], source, options, rel or Path(path).name)

    # ------------------------------------------------------------------ decoding
    def check_latent(self, latent: torch.Tensor, meta: LatentMeta, force: bool = False) -> list[str]:
        """Raise ``ValueError`` if ``latent`` was made by a different model (config hash, channels, shape), unless
        ``force`` (a channel or shape mismatch is never forced). Returns warnings to show."""
        cfg = self.vae.config
        warnings = []
        if latent.shape[0] != cfg.latent_channels:
            raise ValueError(f"latent has {latent.shape[0]} channels, model {self.model_name} expects "
                             f"{cfg.latent_channels}: it was made by {meta.model} ({meta.model_tag})")
        s, t = cfg.spatial_compression, cfg.temporal_compression
        check_frame_count(meta.encoded_frames, t, what=f"the latent's encoded frame count, for {cfg.tag},")
        want = (latent_frame_count(meta.encoded_frames, t), meta.encoded_height // s, meta.encoded_width // s)
        if tuple(latent.shape[1:]) != want:
            raise ValueError(f"latent shape {tuple(latent.shape)} does not match its metadata for {cfg.tag} "
                             f"(expected (C, {want[0]}, {want[1]}, {want[2]}))")
        if meta.config_hash != self.config_hash:
            msg = (f"latent was made by model {meta.model} (config hash {meta.config_hash}), not by "
                   f"{self.model_name} (config hash {self.config_hash})")
            if not force:
                raise ValueError(msg + "; pass --model with the encoding model, or --force")
            warnings.append(msg + " (--force)")
        elif meta.weights_hash and meta.weights_hash != self.weights_hash:
            warnings.append(f"latent was encoded with different weights of the same architecture ({meta.model}); "
                            "fine for a fine-tuned decoder, otherwise check --model")
        if meta.normalized and cfg.latents_mean is None:
            raise ValueError(f"latent is normalised but {self.model_name} has no latent statistics to undo it")
        return warnings

    def decode_frames(
        self, latent: torch.Tensor, meta: LatentMeta, source_size: bool = True, tile: str = "auto",
        tile_spec: TileSpec | None = None, chunk_latents: int = 1,
    ) -> Iterator[np.ndarray]:
        """Decode ``latent`` ``(C, t, h, w)`` as uint8 frame chunks ``(n, H, W, 3)``: exactly ``meta.num_frames``
        frames at the original size (``source_size=False``: at the size after the user's resize)."""
        plan = FramePlan(
            meta.num_frames, meta.height, meta.width, meta.encoded_frames, meta.encoded_height, meta.encoded_width,
            meta.resize, meta.fit, meta.pad, meta.crop,
        )
        z = latent[None].float()
        if meta.normalized:
            z = self.vae.denormalize_latents(z)
        tiled = use_tiling(tile, plan.encoded_height, plan.encoded_width, tile_spec or TileSpec())
        remaining = plan.num_frames
        for x in self.decode_stream(z, tiled, tile_spec, chunk_latents):
            x = x[0, :, :remaining]  # drop the repeated frames added at encode time
            remaining -= x.shape[1]
            if x.shape[1]:
                yield tensor_to_frames(plan.invert(x.clamp(-1, 1), source_size))
        assert remaining == 0, remaining

    def decode_stream(
        self, z: torch.Tensor, tiled: bool = False, tile_spec: TileSpec | None = None, chunk_latents: int = 1
    ) -> Iterator[torch.Tensor]:
        """Decode raw latents ``(B, C, t, h, w)`` ``chunk_latents`` latent frames at a time; yields float32 pixel
        chunks ``(B, 3, n, s*h, s*w)`` (not clamped) whose concatenation is the one-pass ``decode``."""
        s = self.spatial_factor
        grid = TileGrid(z.shape[-2], z.shape[-1], tile_spec or TileSpec(), s) if tiled else None
        streams = grid.new_streams(self.vae) if grid is not None else [self.vae.new_stream()]
        with torch.inference_mode(), autocast(self.device, self.dtype):
            for i in range(0, z.shape[2], chunk_latents):
                zc = z[:, :, i : i + chunk_latents].to(self.device)
                if grid is not None:
                    x = grid.decode(self.vae, zc, streams)
                else:
                    x = self.vae.decode_chunk(zc, streams[0]).float()
                self._check_finite(x, f"decoded frames of latent frame {i}")
                yield x.cpu()

    def decode_to_file(
        self, latent: torch.Tensor, meta: LatentMeta, out: str | Path, source_size: bool = True, tile: str = "auto",
        tile_spec: TileSpec | None = None, chunk_latents: int = 1, crf: int = 12, tag: str | None = None,
        notes: list[str] | None = None,
    ) -> int:
        """Decode into ``out`` (mp4, an image, or a PNG-frame folder), atomically, stamped with ``tag``
        (``media.writer.read_tag``); returns the frame count. What the output cannot keep is added to ``notes``."""
        fps = meta.fps if meta.fps > 0 else 1.0
        with VideoWriter(out, fps, crf, tag=tag) as writer:
            for frames in self.decode_frames(latent, meta, source_size, tile, tile_spec, chunk_latents):
                writer.write(frames)
        if notes is not None:
            notes.extend(writer.notes)
        return writer.num_written

    def _check_finite(self, x: torch.Tensor, where: str) -> None:
        if not torch.isfinite(x).all():
            hint = "fp16 overflows in this model; use --dtype bf16 or fp32" if self.dtype == torch.float16 else \
                "check the weights and the input"
            raise NonFiniteError(f"NaN/inf in the {where} (dtype {DTYPE_NAMES[self.dtype]}): {hint}")
