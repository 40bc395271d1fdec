"""Per-frame image metrics: PSNR and SSIM.

Inputs are pixel tensors in **[-1, 1]** (the model's range), either videos ``(B, 3, T, H, W)`` or images
``(N, 3, H, W)``; both are converted to [0, 1] internally, so ``data_range`` is 1. Videos are scored per
frame and the frame scores averaged, giving one value per sample ``(B,)`` (images: ``(N,)``).

PSNR: ``10 log10(1 / MSE)`` per frame on [0, 1] (identical frames are capped at ``max_db`` rather than inf, so
a mean stays finite). SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), k1 = 0.01,
k2 = 0.03, computed per channel on the valid region (no padding, as in scikit-image's / pytorch-msssim's
``gaussian_weights`` mode), then averaged over channels and pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MAX_DB = 100.0


def to_frames01(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1] -> ``(B, T, 3, H, W)`` float64 in [0, 1].

    Images become ``(N, 1, 3, H, W)``. Values are clamped to [0, 1] (decoder outputs may overshoot).
    """
    if x.ndim == 5:
        frames = x.permute(0, 2, 1, 3, 4)
    elif x.ndim == 4:
        frames = x.unsqueeze(1)
    else:
        raise ValueError(f"expected (B, 3, T, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
    if frames.shape[2] != 3:
        raise ValueError(f"expected 3 channels, got shape {tuple(x.shape)}")
    # float64: SSIM's variance terms are differences of nearly equal numbers.
    return ((frames.detach().double() + 1) / 2).clamp(0, 1)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")


def psnr_frames(x: torch.Tensor, y: torch.Tensor, max_db: float = DEFAULT_MAX_DB) -> torch.Tensor:
    """PSNR in dB of each frame, ``(B, T)`` (images: ``(N, 1)``); inputs in [-1, 1]."""
    _check_pair(x, y)
    a, b = to_frames01(x), to_frames01(y)
    mse = (a - b).pow(2).flatten(2).mean(-1)
    db = 10 * torch.log10(1.0 / mse.clamp_min(1e-30))
    return db.clamp(max=max_db).float()


def psnr(x: torch.Tensor, y: torch.Tensor, max_db: float = DEFAULT_MAX_DB) -> torch.Tensor:
    """PSNR per sample ``(B,)``: per frame on [0, 1], then the mean over frames. Inputs in [-1, 1]."""
    return psnr_frames(x, y, max_db).mean(1)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_frames(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM of each frame, ``(B, T)`` (images: ``(N, 1)``); inputs in [-1, 1], frames at least window x window."""
    _check_pair(x, y)
    a, b = to_frames01(x), to_frames01(y)
    bsz, t, c, h, w = a.shape
    if h < window or w < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window}, got {h}x{w}")
    a = a.reshape(bsz * t * c, 1, h, w)
    b = b.reshape(bsz * t * c, 1, h, w)
    g = _gaussian_window(window, sigma, a.dtype, a.device)

    def blur(z: torch.Tensor) -> torch.Tensor:
        # Separable Gaussian, valid region only.
        z = F.conv2d(z, g.view(1, 1, 1, -1))
        return F.conv2d(z, g.view(1, 1, -1, 1))

    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2  # data_range = 1 after conversion to [0, 1]
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    per_channel = ssim_map.flatten(1).mean(1).view(bsz, t, c)
    return per_channel.mean(2).float()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM per sample ``(B,)``: per frame (11x11 Gaussian window, sigma 1.5), then the mean over frames.

    Inputs ``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1]."""
    return ssim_frames(x, y, window, sigma, k1, k2).mean(1)

