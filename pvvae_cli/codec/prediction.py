"""Future-frame prediction with a predictive VAE: encode a prefix, append padding latents, decode the whole clip.

This is inference with the paper's training objective (§3.1): the model saw clips whose trailing 4-frame groups
were dropped and replaced by padding latents, and learned to reconstruct the whole clip. Here the "dropped"
groups are the future. Frame counts follow the causal t4 layout: ``K = 1 + 4a`` context frames give ``1 + a``
latent frames; ``F = 4b`` future frames need ``b`` padding latents.

Pixels are ``(B, 3, T, H, W)`` in [-1, 1]; latents ``(B, C, t, h, w)`` in the model's raw (un-normalised) space,
where the padding token lives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from pvvae_cli.metrics.image import psnr, ssim
from pvvae_cli.models.pvvae.model import VideoVAE
from pvvae_cli.runtime.device import autocast


def _nearest(value: int, valid) -> str:
    below = max((v for v in valid if v <= value), default=None)
    above = min((v for v in valid if v >= value), default=None)
    options = sorted({v for v in (below, above) if v is not None})
    return " or ".join(str(v) for v in options)


def check_prediction_frames(context_frames: int, future_frames: int, temporal_compression: int = 4) -> None:
    """Raise ``ValueError`` unless ``context_frames = 1 + 4a`` (a >= 0) and ``future_frames = 4b`` (b >= 1),
    naming the nearest valid values (4 = ``temporal_compression``)."""
    tc = temporal_compression
    if context_frames < 1 or (context_frames - 1) % tc:
        valid = range(1, max(context_frames, 1) + tc + 1, tc)
        raise ValueError(f"context frames must be 1 + {tc}a (1, {1 + tc}, {1 + 2 * tc}, ...), got {context_frames}; "
                         f"nearest valid: {_nearest(context_frames, valid)}")
    if future_frames < tc or future_frames % tc:
        valid = range(tc, max(future_frames, tc) + tc + 1, tc)
        raise ValueError(f"future frames must be a positive multiple of {tc} ({tc}, {2 * tc}, ...), got "
                         f"{future_frames}; nearest valid: {_nearest(future_frames, valid)}")


def resolve_padding(vae: VideoVAE, padding: str | None) -> str:
    """``None``/``auto`` -> the model's own ``padding_mode``. Learned padding on a model without a padding token
    raises ``ValueError`` that says to use gaussian padding."""
    mode = vae.config.padding_mode if padding in (None, "auto") else padding
    if mode not in ("learnable", "gaussian"):
        raise ValueError(f"unknown padding {padding!r}; use auto, learnable or gaussian")
    if mode == "learnable" and vae.padding_token is None:
        raise ValueError("this model has no learned padding tokens (it was trained with gaussian padding); "
                         "use gaussian padding (--padding gaussian)")
    return mode


@torch.no_grad()
def predict_from_latents(
    vae: VideoVAE,
    latents: torch.Tensor,
    future_frames: int,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Raw latents ``(B, C, 1+a, h, w)`` of the context -> pixels ``(B, 3, 1+4a+F, 16h, 16w)`` in [-1, 1].

    The first ``1+4a`` output frames decode the context; the last ``F = future_frames`` are the prediction.
    """
    tc = vae.config.temporal_compression
    check_prediction_frames(1 + tc * (latents.shape[2] - 1), future_frames, tc)
    mode = resolve_padding(vae, padding)
    device = next(vae.parameters()).device
    z = vae.pad_latents(latents.to(device, torch.float32), future_frames // tc, mode=mode, generator=generator)
    with autocast(device, dtype):
        out = vae.decode(z)
    return out.float().clamp(-1, 1)


@torch.no_grad()
def predict_future(
    vae: VideoVAE,
    context: torch.Tensor,
    future_frames: int,
    padding: str | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Context pixels ``(B, 3, K, H, W)`` in [-1, 1], ``K = 1 + 4a`` -> ``(B, 3, K + F, H, W)`` in [-1, 1]:
    the decoded context followed by ``F = future_frames`` predicted frames. The context is encoded to its
    posterior mode; ``padding`` is ``learnable``, ``gaussian`` or ``None`` (the model's own mode)."""
    check_prediction_frames(context.shape[2], future_frames, vae.config.temporal_compression)
    resolve_padding(vae, padding)  # fail before the encoder runs
    device = next(vae.parameters()).device
    with autocast(device, dtype):
        z = vae.encode(context.to(device)).mode()
    return predict_from_latents(vae, z.float(), future_frames, padding, generator, dtype)


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
