"""Metrics: PSNR/SSIM against closed forms and an independent reference, Fréchet distance against the Gaussian
closed form, KVD, feature extraction through a tiny stand-in network, and the metric-unavailable messages."""

import math

import numpy as np
import pytest
import torch
from conftest import StandInI3D

from pvvae_cli.metrics import (
    LPIPSMetric,
    MetricUnavailable,
    extract_features,
    frechet_distance,
    fvd_from_features,
    kernel_distance,
    psnr,
    psnr_frames,
    ssim,
    ssim_frames,
)
from pvvae_cli.metrics.perceptual import load_lpips


# ------------------------------------------------------------------------------------------------ PSNR
def test_psnr_of_known_noise():
    x = torch.rand(2, 3, 5, 16, 16) - 0.5  # in [-0.5, 0.5]: no clamping after adding the noise
    a = 0.1  # +-a in [-1, 1] is +-a/2 in [0, 1]: MSE = (a/2)^2 exactly
    sign = torch.randint(0, 2, x.shape).float() * 2 - 1
    got = psnr(x, x + a * sign)
    want = 10 * math.log10(1 / (a / 2) ** 2)  # 26.02 dB
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), want), atol=1e-4)


def test_psnr_is_per_frame_then_mean():
    x = torch.zeros(1, 3, 2, 8, 8)
    y = x.clone()
    y[:, :, 0] += 0.02  # frame 0: MSE (0.01)^2 -> 40 dB
    y[:, :, 1] += 0.2  # frame 1: MSE (0.1)^2 -> 20 dB
    assert torch.allclose(psnr_frames(x, y), torch.tensor([[40.0, 20.0]]), atol=1e-4)
    assert abs(float(psnr(x, y)) - 30.0) < 1e-4  # not the PSNR of the mean MSE (22.9 dB)


def test_psnr_identical_is_capped_and_images_work():
    x = torch.rand(3, 3, 8, 8) * 2 - 1  # images (N, 3, H, W)
    assert torch.equal(psnr(x, x), torch.full((3,), 100.0))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:2])


# ------------------------------------------------------------------------------------------------ SSIM
def test_ssim_identical_is_one_and_decreases_with_noise():
    x = torch.rand(2, 3, 3, 32, 32) * 1.6 - 0.8
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    values = [float(ssim(x, x + s * torch.randn_like(x)).mean()) for s in (0.02, 0.1, 0.3)]
    assert 1 > values[0] > values[1] > values[2] > 0


@pytest.mark.parametrize("low, span, noise", [(-1.0, 2.0, 0.2), (-1.0, 0.1, 0.03)])  # the dark pair tests c1, c2
def test_ssim_matches_independent_reference(low, span, noise):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 3, 1, 24, 28) * span + low
    y = (x + noise * torch.randn_like(x)).clamp(-1, 1)
    a = ((x[0, :, 0] + 1) / 2).double().numpy()
    b = ((y[0, :, 0] + 1) / 2).double().numpy()
    # scikit-image's gaussian_weights=True convention: sigma 1.5, truncate 3.5 (11 taps), border of 5 cropped.
    vals = []
    for ca, cb in zip(a, b, strict=True):
        f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")  # noqa: E731
        mu_a, mu_b = f(ca), f(cb)
        va, vb, cov = f(ca * ca) - mu_a**2, f(cb * cb) - mu_b**2, f(ca * cb) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
        vals.append(s[5:-5, 5:-5].mean())
    assert abs(float(ssim(x, y)) - float(np.mean(vals))) < 1e-6


def test_ssim_video_equals_per_frame_images():
    x = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    y = x + 0.1 * torch.randn_like(x)
    per_frame = ssim_frames(x, y)  # (2, 3)
    images = ssim(x[:, :, 1], y[:, :, 1])  # (N, 3, H, W)
    assert torch.allclose(per_frame[:, 1], images, atol=1e-6)
    assert torch.allclose(ssim(x, y), per_frame.mean(1), atol=1e-6)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], y[..., :8, :8])


# ------------------------------------------------------------------------------------------------ Fréchet / KVD
def test_frechet_distance_closed_form_diagonal():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert abs(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) - want) < 1e-9


def test_frechet_distance_general_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = m1 @ m1.T, m2 @ m2.T + np.eye(8)  # non-commuting SPD
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert abs(frechet_distance(mu1, s1, mu2, s2) - want) < 1e-8 * max(1, want)
    # Rank-deficient covariances (fewer samples than dimensions, as in small evaluations) stay finite and >= 0.
    low = rng.normal(size=(8, 3))
    assert frechet_distance(mu1, low @ low.T, mu1, low @ low.T) < 1e-8


def test_fvd_of_samples_approaches_gaussian_closed_form():
    rng = np.random.default_rng(2)
    n, d = 20000, 4
    f1 = rng.normal(size=(n, d))  # N(0, I)
    f2 = rng.normal(size=(n, d)) * 2.0 + 1.0  # N(1, 4I)
    want = d * 1.0 + d * (1 - 2) ** 2  # |mu|^2 + sum (sqrt(1) - sqrt(4))^2 = 8
    assert abs(fvd_from_features(f1, f2) - want) < 0.25
    assert fvd_from_features(f1, f1) < 1e-9


def test_kvd_zero_for_identical_sets_positive_for_different():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 16))
    far = rng.normal(size=(400, 16)) + 0.5
    assert abs(kernel_distance(x, x, estimator="biased")[0]) < 1e-9
    assert abs(kernel_distance(x, x, estimator="u-statistic")[0]) < 1e-9
    different, _ = kernel_distance(x, far)
    same_set, _ = kernel_distance(x, x)  # KID's unbiased estimator: zero up to its O(1/N) diagonal term
    assert different > 0.5
    assert abs(same_set) < 0.05 * different
    # Two independent samples of one distribution: the unbiased estimate is near zero.
    y = rng.normal(size=(400, 16))
    assert abs(kernel_distance(x, y)[0]) < 0.05 * different
    # Subsets: mean and spread over random subsets.
    mean, std = kernel_distance(x, far, num_subsets=10, subset_size=100)
    assert std > 0 and abs(mean - different) < 0.5 * different


def test_extract_features_with_a_stand_in():
    extractor = StandInI3D()
    videos = [torch.rand(3, 5, 16, 16) * 2 - 1 for _ in range(5)]
    feats = extract_features(extractor, videos, batch_size=2)
    assert feats.shape == (5, 6) and feats.dtype == np.float64
    again = extract_features(extractor, [torch.stack(videos)], batch_size=8)
    assert np.allclose(feats, again, atol=1e-5)
    assert fvd_from_features(feats, feats) < 1e-6


# ------------------------------------------------------------------------------------------------ unavailable
# (ST-LPIPS and I3D: tests/test_metric_networks.py)
def test_lpips_unavailable_without_backbone(offline):
    with pytest.raises(MetricUnavailable, match=r"alexnet-owt-7be5be79\.pth"):
        LPIPSMetric("alex")
    with pytest.raises(MetricUnavailable):
        load_lpips("alex")


def test_lpips_metric_wiring_random_backbone():
    metric = LPIPSMetric("alex", random_backbone=True, frames_per_batch=3)
    x = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    same = metric(x, x)
    noisy = metric(x, (x + 0.3 * torch.randn_like(x)).clamp(-1, 1))
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (noisy > same).all()
    assert "RANDOM" in metric.description
