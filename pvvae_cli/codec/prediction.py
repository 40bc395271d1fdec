"""Future-frame prediction with a predictive VAE: encode a prefix, append padding latents, decode the whole clip.

This is inference with the paper's training objective (§3.1): the model saw clips whose trailing ``tc``-frame
groups were dropped and replaced by padding latents, and learned to reconstruct the whole clip. Here the "dropped"
groups are the future. Frame counts follow the causal layout of ``pvvae_cli.frames`` with the model's temporal
factor ``tc`` (4 for t4 models): ``K = 1 + tc*a`` context frames give ``1 + a`` latent frames; ``F = tc*b``
future frames need ``b`` padding latents.

Pixels are ``(B, 3, T, H, W)`` in [-1, 1]; latents ``(B, C, t, h, w)`` in the model's raw (un-normalised) space,
where the padding token lives. ``predict_clip`` and ``predict_latent_file`` are the file-level entry points of
``pvvae predict``: they read the context, check it against the model and return a ``Prediction``.

Encoding and decoding go through ``codec.pipeline.Codec`` (``encode_stream``, ``decode_stream``): the model's
streaming ``encode_chunk``/``decode_chunk``, one stream per spatial tile for large frames, as ``pvvae encode`` and
``pvvae decode`` run it, so device memory is bounded by a chunk (and a tile), not by the clip. Only the padded
latent, small, is built whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pvvae_cli.codec.framing import FramePlan
from pvvae_cli.codec.tiling import TileSpec, use_tiling
from pvvae_cli.frames import frame_rule_message, is_valid_frame_count, pixel_frame_count, round_down_to_valid
from pvvae_cli.metrics.image import psnr, ssim
from pvvae_cli.models.pvvae.config import PADDING_MODES
from pvvae_cli.models.pvvae.model import VideoVAE


def check_prediction_frames(context_frames: int, future_frames: int, temporal_compression: int) -> None:
    """Raise ``ValueError`` unless ``context_frames = 1 + tc*a`` (a >= 0) and ``future_frames = tc*b`` (b >= 1),
    naming the nearest valid values (``tc`` = the model's ``temporal_compression``)."""
    tc = temporal_compression
    if not is_valid_frame_count(context_frames, tc):
        raise ValueError(frame_rule_message(context_frames, tc, "context frames", letter="a"))
    if future_frames < tc or future_frames % tc:
        lo = max(tc, future_frames // tc * tc)
        nearest = str(lo) if future_frames < lo else f"{lo} or {lo + tc}"
        raise ValueError(f"future frames must be a positive multiple of {tc} ({tc}, {2 * tc}, ...), got "
                         f"{future_frames}; nearest valid: {nearest}")


def resolve_padding(vae: VideoVAE, padding: str | None) -> str:
    """``None``/``auto`` -> the model's own ``padding_mode``. Learned padding on a model without a padding token
    raises ``ValueError`` that says to use gaussian padding."""
    if not hasattr(vae, "pad_latents"):
        raise ValueError(f"{type(vae).__name__} has no padding latents: it cannot predict future frames")
    mode = vae.config.padding_mode if padding in (None, "auto") else padding
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding {padding!r}; use auto, {' or '.join(PADDING_MODES)}")
    if mode == "learnable" and vae.padding_token is None:
        raise ValueError("this model has no learned padding tokens (it was trained with gaussian padding); "
                         "use gaussian padding (--padding gaussian)")
    return mode


def _codec(vae: VideoVAE, dtype: torch.dtype):
    """``vae`` as a ``codec.pipeline.Codec`` on its own device: predict streams through the codec's chunked,
    tiled encode and decode rather than a loop of its own."""
    from pvvae_cli.codec.pipeline import Codec

    return Codec(vae, "predict", next(vae.parameters()).device, dtype)


@torch.no_grad()
def predict_from_latents(
    vae: VideoVAE,
    latents: torch.Tensor,
    future_frames: int,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    tile: str = "auto",
    tile_spec: TileSpec | None = None,
    chunk_latents: int = 1,
) -> torch.Tensor:
    """Raw latents ``(B, C, 1+a, h, w)`` of the context -> pixels ``(B, 3, 1+tc*a+F, s*h, s*w)`` in [-1, 1], on
    the CPU.

    The first ``1+tc*a`` output frames decode the context; the last ``F = future_frames`` are the prediction. The
    padded latents (small: the latent grid) are decoded ``chunk_latents`` latent frames at a time through the
    model's streaming ``decode_chunk``, tiled as ``pvvae decode`` tiles (``tile``: auto/on/off, ``tile_spec``),
    so memory does not grow with the clip's length or, tiled, with its area beyond the output itself. Untiled,
    the result equals the one-pass ``vae.decode`` (within float tolerance).
    """
    tc = vae.config.temporal_compression
    check_prediction_frames(pixel_frame_count(latents.shape[2], tc), future_frames, tc)
    mode = resolve_padding(vae, padding)
    codec = _codec(vae, dtype)
    z = vae.pad_latents(latents.to(codec.device, torch.float32), future_frames // tc, mode=mode, generator=generator)
    s = vae.config.spatial_compression
    spec = tile_spec or TileSpec()
    tiled = use_tiling(tile, z.shape[-2] * s, z.shape[-1] * s, spec)
    out = torch.empty(z.shape[0], 3, pixel_frame_count(z.shape[2], tc), z.shape[-2] * s, z.shape[-1] * s)
    t = 0
    for x in codec.decode_stream(z, tiled, spec, chunk_latents):  # CPU float32 chunks (B, 3, n, H, W)
        out[:, :, t : t + x.shape[2]] = x.clamp_(-1, 1)
        t += x.shape[2]
    assert t == out.shape[2], (t, out.shape)
    return out


@torch.no_grad()
def predict_future(
    vae: VideoVAE,
    context: torch.Tensor,
    future_frames: int,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    tile: str = "auto",
    tile_spec: TileSpec | None = None,
    chunk_latents: int = 1,
) -> torch.Tensor:
    """Context pixels ``(B, 3, K, H, W)`` in [-1, 1], ``K = 1 + tc*a`` -> ``(B, 3, K + F, H, W)`` in [-1, 1] on the
    CPU: the decoded context followed by ``F = future_frames`` predicted frames. The context is encoded to its
    posterior mode through the codec's streaming (first frame, then ``tc * chunk_latents`` frames at a time) and
    tiled encode, as ``pvvae encode`` does; ``padding`` is ``learnable``, ``gaussian`` or ``None`` (the model's own
    mode). ``tile``, ``tile_spec``, ``chunk_latents``: as for ``predict_from_latents``."""
    from pvvae_cli.codec.pipeline import EncodeOptions

    check_prediction_frames(context.shape[2], future_frames, vae.config.temporal_compression)
    resolve_padding(vae, padding)  # fail before the encoder runs
    _, _, k, h, w = context.shape
    spec = tile_spec or TileSpec()
    options = EncodeOptions(tile=tile, tile_size=spec.tile, tile_overlap=spec.overlap, chunk_latents=chunk_latents)
    plan = FramePlan(k, h, w, k, h, w)  # a valid frame count at multiples of s: nothing to pad or resize
    chunks = (context[:, :, i : i + 16] for i in range(0, k, 16))  # regrouped into model chunks by encode_stream
    mean, _ = _codec(vae, dtype).encode_stream(chunks, plan, options)  # the mode, fp32 on the CPU
    return predict_from_latents(vae, mean, future_frames, padding, generator, dtype, tile, tile_spec, chunk_latents)


def copy_last_frame(context: torch.Tensor, future_frames: int) -> torch.Tensor:
    """The standing-still baseline: the last context frame repeated, ``(B, 3, F, H, W)``."""
    return context[:, :, -1:].expand(-1, -1, future_frames, -1, -1)


@dataclass(frozen=True)
class PredictionScores:
    """PSNR (dB) and SSIM of predicted future frames against the true ones, and of the copy-last-frame baseline.
    Each is the mean over samples of the per-sample mean over frames."""

    frames: int
    psnr: float
    ssim: float
    copy_psnr: float
    copy_ssim: float

    @property
    def beats_copy(self) -> bool:
        return self.psnr > self.copy_psnr

    def to_dict(self) -> dict:
        return asdict(self)


def score_prediction(
    predicted: torch.Tensor, truth: torch.Tensor, last_observed: torch.Tensor
) -> tuple[PredictionScores, dict[str, torch.Tensor]]:
    """Score predicted future frames ``(B, 3, F, H, W)`` against ``truth`` (same shape), and the copy baseline
    built from ``last_observed`` ``(B, 3, 1, H, W)`` (or the whole context: its last frame is used). All in
    [-1, 1]. Returns the summary and per-sample ``(B,)`` tensors keyed psnr/ssim/copy_psnr/copy_ssim."""
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and true {tuple(truth.shape)} frames differ in shape")
    copy = copy_last_frame(last_observed, truth.shape[2])
    per = {
        "psnr": psnr(predicted, truth),
        "ssim": ssim(predicted, truth),
        "copy_psnr": psnr(copy, truth),
        "copy_ssim": ssim(copy, truth),
    }
    means = {k: float(v.double().mean()) for k, v in per.items()}
    return PredictionScores(frames=truth.shape[2], **means), per


# ------------------------------------------------------------------------------------------------ files
@dataclass(frozen=True)
class Prediction:
    """What ``pvvae predict`` shows. ``output`` ``(1, 3, K + F, H, W)`` in [-1, 1]: the decoded context, then the
    ``future_frames`` (F) predicted frames. ``source`` ``(1, 3, K + g, H, W)``: the observed context and the
    ``g <= F`` true future frames the video has (None for a latent context). ``fps``: the source's (8 for an
    image). ``warnings``: things the user should know (e.g. a latent made by other weights)."""

    output: torch.Tensor
    future_frames: int
    fps: float
    source: torch.Tensor | None = None
    warnings: tuple[str, ...] = ()

    @property
    def context_frames(self) -> int:
        return self.output.shape[2] - self.future_frames

    @property
    def true_future_frames(self) -> int:
        """``g``: how many of the predicted frames have ground truth."""
        return 0 if self.source is None else self.source.shape[2] - self.context_frames

    def score(self) -> PredictionScores | None:
        """The predicted frames that have ground truth, scored against it and against the copy-last-frame
        baseline; None without ground truth."""
        k, g = self.context_frames, self.true_future_frames
        if not g:
            return None
        return score_prediction(self.output[:, :, k : k + g], self.source[:, :, k:], self.source[:, :, k - 1 : k])[0]

    def frames(self, decoded_context: bool = False, side_by_side: bool = False) -> np.ndarray:
        """uint8 ``(K + F, H, W, 3)``: the observed context (the decoded one with ``decoded_context``, and always for
        a latent context), then the prediction. ``side_by_side`` (needs all F true future frames): the ground
        truth on the left, ``(K + F, H, 2W, 3)``."""
        from pvvae_cli.media.video_io import tensor_to_frames

        k = self.context_frames
        observed = self.output[:, :, :k] if decoded_context or self.source is None else self.source[:, :, :k]
        frames = tensor_to_frames(torch.cat([observed, self.output[:, :, k:]], dim=2)[0])
        if side_by_side:
            if self.true_future_frames != self.future_frames:
                raise ValueError(f"side by side needs the {self.future_frames} true future frames, the source has "
                                 f"{self.true_future_frames}")
            frames = np.concatenate([tensor_to_frames(self.source[0]), frames], axis=2)  # ground truth | output
        return frames


def predict_clip(
    vae: VideoVAE,
    path: str | Path,
    context_frames: int,
    future_frames: int,
    start: int = 0,
    size: int | None = None,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    tile: str = "auto",
    tile_spec: TileSpec | None = None,
) -> Prediction:
    """Predict ``future_frames`` frames of the video (or image) at ``path`` from its ``context_frames`` frames from
    ``start``, and keep the true future frames it has for scoring. ``size``: short side resized to ``size`` and a
    centred square crop (else native size, which must be a multiple of the model's spatial factor). ``tile``,
    ``tile_spec``: spatial tiling as in ``pvvae encode``/``decode``. Raises ``ValueError`` (``VideoReadError`` for
    an unreadable file) with the fix."""
    from pvvae_cli.media.transforms import resize_crop
    from pvvae_cli.media.video_io import frames_to_tensor, probe, read_clip

    tc, s = vae.config.temporal_compression, vae.config.spatial_compression
    check_prediction_frames(context_frames, future_frames, tc)
    if size is not None and (size < s or size % s):
        raise ValueError(f"--size must be a positive multiple of {s}, got {size}")
    info = probe(path)
    available = info.num_frames - start
    if available < context_frames:
        hint = (f"use --context-frames {round_down_to_valid(available, tc)} or less" if available >= 1
                else "use a smaller --start")
        raise ValueError(f"{path}: has {info.num_frames} frames, so {context_frames} context frames from frame "
                         f"{start} do not fit; {hint}")
    raw, fps = read_clip(path, start=start, num_frames=min(available, context_frames + future_frames))
    x = frames_to_tensor(raw)
    if size is not None:
        x = resize_crop(x, size)
    if x.shape[2] % s or x.shape[3] % s:
        raise ValueError(f"{path}: frames are {x.shape[3]}x{x.shape[2]}, not multiples of {s}; pass --size N "
                         f"(a multiple of {s}) to resize and centre-crop")
    x = x.unsqueeze(0)  # (1, 3, K + g, H, W)
    out = predict_future(vae, x[:, :, :context_frames], future_frames, padding, generator, dtype, tile, tile_spec)
    return Prediction(out, future_frames, fps if fps > 0 else 8.0, source=x)


def predict_latent_file(
    codec,
    path: str | Path,
    future_frames: int,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    force: bool = False,
    tile: str = "auto",
    tile_spec: TileSpec | None = None,
) -> Prediction:
    """Predict ``future_frames`` frames after the context stored in a latent file from ``pvvae encode``, with
    ``codec``'s model (a ``codec.pipeline.Codec``), which ``Codec.check_latent`` checks against the file (a
    latent of another model config is refused unless ``force``). The output is at the source size, as
    ``pvvae decode`` gives it (streamed and tiled as there: ``tile``, ``tile_spec``). Raises ``ValueError``
    (``LatentFormatError`` for an unreadable file)."""
    from pvvae_cli.codec.latents import load_latent

    latent, meta = load_latent(path)
    warnings = codec.check_latent(latent, meta, force)
    vae = codec.vae
    z = latent.unsqueeze(0)  # (1, C, t, h, w)
    if meta.normalized:
        z = vae.denormalize_latents(z)  # padding tokens live in the raw latent space
    out = predict_from_latents(vae, z, future_frames, padding, generator, codec.dtype, tile, tile_spec)
    out = FramePlan.from_meta(meta).invert(out)  # undo encode's padding (or resize) to multiples of s
    return Prediction(out, future_frames, meta.fps if meta.fps > 0 else 8.0, warnings=tuple(warnings))
