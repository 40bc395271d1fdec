"""The paper's two looks at a latent space: PCA of the latent channels rendered as video, and the latent temporal
distance.

- ``latent_temporal_distance``: for each interval d = 1..D, the mean over clips, start frames and positions of the
  L2 distance between the latent vectors ``z[:, :, i]`` and ``z[:, :, i + d]`` (over channels), after standardising
  each channel over the whole set (so VAEs with different latent scales compare), divided by ``sqrt(C)`` (an RMS
  per channel). A latent space whose distance grows smoothly with d encodes motion smoothly; the paper reads
  predictive latents as more temporally coherent this way.
- ``pca_video``: the top 3 principal components of the channel vectors of every latent position of a set (fitted
  together, so colours mean the same in every clip), each mapped to a colour channel (clipped at +-2.5 standard
  deviations to 0..255), upsampled (nearest) to the pixel size. ``side_by_side`` puts it beside the input: pixel
  frame f shows latent frame ``ceil(f / tc)``, the causal layout (frame 0 alone in latent 0, then ``tc`` frames
  per latent).

Latents are ``(B, C, t, h, w)`` (raw or normalised: both analyses standardise); frames uint8 ``(T, H, W, 3)``.
"""

from __future__ import annotations

import numpy as np
import torch


def standardize(z: torch.Tensor) -> torch.Tensor:
    """``z`` ``(B, C, t, h, w)`` with each channel at mean 0, std 1 over the set (a constant channel: std 1)."""
    flat = z.double().transpose(0, 1).flatten(1)  # (C, B*t*h*w)
    mean, std = flat.mean(1), flat.std(1, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (z.double() - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def latent_temporal_distance(z: torch.Tensor, max_interval: int | None = None) -> np.ndarray:
    """``float64 (D,)``: the mean per-channel-RMS distance between latent frames ``d`` apart, ``d = 1..D``
    (``D = t - 1`` by default). ``z`` is ``(B, C, t, h, w)`` with ``t >= 2``."""
    if z.ndim != 5 or z.shape[2] < 2:
        raise ValueError(f"need latents (B, C, t>=2, h, w), got {tuple(z.shape)}")
    t = z.shape[2]
    max_interval = t - 1 if max_interval is None else max_interval
    if not 1 <= max_interval <= t - 1:
        raise ValueError(f"max_interval must be in 1..{t - 1} for {t} latent frames, got {max_interval}")
    s = standardize(z)
    c = s.shape[1]
    out = []
    for d in range(1, max_interval + 1):
        diff = s[:, :, d:] - s[:, :, :-d]  # (B, C, t-d, h, w)
        out.append(float((diff.pow(2).sum(1).sqrt() / c**0.5).mean()))
    return np.array(out)


def pca_basis(z: torch.Tensor, components: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ``(C,)``, the top principal directions ``(C, k)`` and the std of each projection ``(k,)`` of the channel
    vectors of every position of ``z`` ``(B, C, t, h, w)``. Fewer than ``components`` channels: zero columns."""
    x = z.double().transpose(0, 1).flatten(1).T  # (N, C)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)  # rows of v: directions, by decreasing variance
    basis = torch.zeros(x.shape[1], components, dtype=torch.float64)
    k = min(components, v.shape[0])
    basis[:, :k] = v[:k].T
    proj = (x - mean) @ basis
    std = proj.std(0, unbiased=False)
    return mean, basis, torch.where(std > 1e-8, std, torch.ones_like(std))


def pca_video(z: torch.Tensor, height: int, width: int,
              basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """One clip's latents ``(C, t, h, w)`` -> uint8 ``(t, height, width, 3)``: its top-3 PCA projections as RGB
    (``basis`` from ``pca_basis`` of a set; default: fitted on this clip alone)."""
    if z.ndim != 4:
        raise ValueError(f"need one clip's latents (C, t, h, w), got {tuple(z.shape)}")
    mean, directions, std = basis if basis is not None else pca_basis(z[None])
    c, t, h, w = z.shape
    x = z.double().permute(1, 2, 3, 0).reshape(-1, c)  # (t*h*w, C)
    proj = ((x - mean) @ directions / std).clamp(-2.5, 2.5)  # (t*h*w, 3)
    img = ((proj + 2.5) / 5.0 * 255).round().to(torch.uint8).view(t, h, w, 3).permute(0, 3, 1, 2)
    img = torch.nn.functional.interpolate(img.float(), size=(height, width), mode="nearest")
    return img.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def side_by_side(frames: np.ndarray, latent_frames: np.ndarray, temporal_compression: int) -> np.ndarray:
    """The input ``(T, H, W, 3)`` beside its PCA video ``(t, H, W, 3)`` (2-px grey gap), as ``(T, H, 2W+2, 3)``;
    pixel frame f is shown with latent frame ``ceil(f / tc)``."""
    tcomp = temporal_compression
    if frames.shape[1:] != latent_frames.shape[1:]:
        raise ValueError(f"frames {frames.shape[1:]} and PCA frames {latent_frames.shape[1:]} differ in size")
    index = np.minimum(-(-np.arange(frames.shape[0]) // tcomp), latent_frames.shape[0] - 1)
    gap = np.full((frames.shape[0], frames.shape[1], 2, 3), 128, dtype=np.uint8)
    return np.concatenate([frames, gap, latent_frames[index]], axis=2)
