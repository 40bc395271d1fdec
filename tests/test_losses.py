"""Loss terms, the 3D patch discriminator, and LPIPS wiring / unavailability."""

import pytest
import torch
from conftest import random_clip

from pvvae_cli.metrics.perceptual import MetricUnavailable
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.train.discriminator import PatchDiscriminator3D
from pvvae_cli.train.losses import (
    LPIPSLoss,
    adaptive_gan_weight,
    generator_adv_loss,
    hinge_d_loss,
    kl_loss,
    motion_loss,
    mse_loss,
    reconstruction_terms,
    weighted_sum,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_motion_loss_zero_for_perfect_reconstruction_positive_otherwise():
    x = random_clip(2, 3, 9, 16, 16)
    assert motion_loss(x, x) == 0
    assert motion_loss(x + 0.3, x) < 1e-10  # a constant offset changes no frame difference ...
    assert mse_loss(x + 0.3, x) > 0.08  # ... while MSE sees it
    static = x[:, :, :1].expand_as(x)  # "copy the first frame": the shortcut the motion loss penalises
    assert motion_loss(static, x) > 0.1
    y = x.clone()
    y[:, :, 4] += 0.1
    assert motion_loss(y, x) > 0
    assert motion_loss(x[:, :, :1], x[:, :, :1]) == 0  # single frames have no motion


def test_kl_loss():
    zeros = torch.zeros(2, 4, 1, 2, 2)
    assert kl_loss(DiagonalGaussian(zeros, zeros), 100) == 0  # the prior itself
    shifted = kl_loss(DiagonalGaussian(zeros + 1, zeros), 100)
    assert shifted == pytest.approx(0.5 * 16 / 100)  # 0.5 * mean^2 summed over 16 latent values, per pixel


def test_reconstruction_terms_and_weighted_sum():
    x, y = random_clip(2, 3, 9, 16, 16), random_clip(2, 3, 9, 16, 16)
    post = DiagonalGaussian(torch.zeros(2, 4, 3, 1, 1), torch.zeros(2, 4, 3, 1, 1))
    weights = {"mse": 1.0, "motion": 0.5, "lpips": 0.0, "kl": 1e-6}
    terms = reconstruction_terms(y, x, post, weights)
    assert set(terms) == {"mse", "motion", "kl"}  # zero weights are not computed
    total = weighted_sum(terms, weights)
    assert total == pytest.approx(float(terms["mse"] + 0.5 * terms["motion"] + 1e-6 * terms["kl"]))
    assert "kl" not in reconstruction_terms(y, x, None, weights)  # frozen encoder: no KL
    with pytest.raises(ValueError, match="no LPIPSLoss"):
        reconstruction_terms(y, x, post, {**weights, "lpips": 1.0})


def test_gan_losses():
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)) == 0  # confident, correct D
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)) == 1.0
    assert generator_adv_loss(torch.full((4,), 3.0)) == -3.0


def test_adaptive_gan_weight_balances_gradient_norms():
    w = torch.randn(4, 4, requires_grad=True)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    rec, gan = (w * a).sum(), 1000.0 * (w * b).sum()  # the adversarial gradient is ~1000x larger
    scale = adaptive_gan_weight(rec, gan, w)
    assert scale == pytest.approx(float(a.norm() / (1000.0 * b.norm() + 1e-4)), rel=1e-5)
    assert not scale.requires_grad
    assert adaptive_gan_weight(rec, 0.0 * gan, w, max_weight=50.0) == 50.0  # clamped


@pytest.mark.parametrize("t", [1, 5])
def test_discriminator_shapes_and_gradients(t):
    disc = PatchDiscriminator3D(channels=8, num_layers=3)
    x = (torch.rand(2, 3, t, 32, 32) * 2 - 1).requires_grad_(True)
    logits = disc(x)
    assert logits.shape[:3] == (2, 1, t) and logits.shape[3] >= 1
    generator_adv_loss(logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_lpips_wiring_with_random_backbone():
    # Random backbone: tests the plumbing only; never a measurement.
    loss = LPIPSLoss(random_backbone=True, max_frames=2)
    x = random_clip(2, 3, 5, 32, 32)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x.flip(-1), x)) > 0


def test_lpips_unavailable_is_a_clear_error(offline):
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        LPIPSLoss()


def test_lpips_weight_stops_the_run_at_start(offline, tmp_path):
    from typer.testing import CliRunner

    from pvvae_cli.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--data", "synthetic:shapes", "--out", str(out),
                                      "--lpips-weight", "1.0", "--quiet"])
    assert result.exit_code == 2
    assert "error: LPIPS (alex) needs torchvision's ImageNet backbone weights" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # stopped before writing anything
