"""Loss terms, the 3D patch discriminator, and the perceptual term: ST-LPIPS (alex) training (real network where set
up), LPIPS wiring, unavailability, and old run configs."""

import pytest
import torch
from conftest import TINY_TRAIN, metric_network, random_clip, read_metrics

from pvvae_cli.metrics.perceptual import MetricUnavailable
from pvvae_cli.models.posterior import DiagonalGaussian
from pvvae_cli.train.discriminator import PatchDiscriminator3D
from pvvae_cli.train.losses import (
    adaptive_gan_weight,
    build_perceptual_loss,
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
    weights = {"mse": 1.0, "motion": 0.5, "perceptual": 0.0, "kl": 1e-6}
    terms = reconstruction_terms(y, x, post, weights)
    assert set(terms) == {"mse", "motion", "kl"}  # zero weights are not computed
    total = weighted_sum(terms, weights)
    assert total == pytest.approx(float(terms["mse"] + 0.5 * terms["motion"] + 1e-6 * terms["kl"]))
    assert "kl" not in reconstruction_terms(y, x, None, weights)  # frozen encoder: no KL
    with pytest.raises(ValueError, match="no PerceptualLoss"):
        reconstruction_terms(y, x, post, {**weights, "perceptual": 1.0})


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
    loss = build_perceptual_loss("lpips", random_backbone=True, max_frames=2)
    x = random_clip(2, 3, 5, 32, 32)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x.flip(-1), x)) > 0


def test_stlpips_loss_has_gradients_and_the_frame_subset():
    metric_network("stlpips")
    loss = build_perceptual_loss("stlpips", max_frames=2)
    assert not any(p.requires_grad for p in loss.parameters())
    x = random_clip(1, 3, 5, 32, 32)
    recon = x.flip(-1).requires_grad_(True)
    value = loss(recon, x)
    value.backward()
    assert value > 0 and recon.grad.abs().sum() > 0
    assert recon.grad[:, :, 1:4].abs().sum() == 0  # max_frames=2 of 5: frames 0 and 4 only
    assert float(loss(x, x)) == 0.0


def test_perceptual_unavailable_is_a_clear_error(offline):
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        build_perceptual_loss("lpips")
    with pytest.raises(MetricUnavailable, match="pvvae setup-metrics"):
        build_perceptual_loss("stlpips")


@pytest.mark.parametrize("kind, message", [("lpips", "error: LPIPS (alex) needs torchvision's ImageNet backbone"),
                                           ("stlpips", "error: ST-LPIPS (alex): no network at")])
def test_missing_perceptual_network_stops_the_run_at_start(offline, tmp_path, kind, message):
    from typer.testing import CliRunner

    from pvvae_cli.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--data", "synthetic:shapes", "--out", str(out),
                                      "--perceptual", kind, "--quiet"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()  # stopped before writing anything


def test_training_with_stlpips(tmp_path, one_thread):
    from pvvae_cli.train.config import build_config
    from pvvae_cli.train.trainer import train

    metric_network("stlpips")
    cfg = build_config("video", **{**TINY_TRAIN, "steps": 2, "perceptual": "stlpips", "perceptual_weight": 0.5})
    assert cfg.loss_weights["perceptual"] == 0.5
    train(cfg, tmp_path / "run", quiet=True)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(r["perceptual"] > 0 for r in rows)
    # validation reports the trained distance next to PSNR (steps 0 and 2), a real distance in (0, 1)
    vals = read_metrics(tmp_path / "run", "val")
    assert [v["step"] for v in vals] == [0, 2] and all(0 < v["perceptual_recon"] < 1 for v in vals)
    assert "perceptual ST-LPIPS (alex) 0.5" in (tmp_path / "run" / "weights" / "README.md").read_text()


def test_old_run_configs_keep_their_lpips_term():
    from pvvae_cli.train.config import TrainConfig

    base = {"stage": "video", "preset": "tiny", "data": ["synthetic:shapes"], "frames": 5, "size": 32}
    old = TrainConfig.from_dict({**base, "lpips_weight": 0.7})
    assert (old.perceptual, old.perceptual_weight) == ("lpips", 0.7)
    assert TrainConfig.from_dict({**base, "lpips_weight": 0.0}).loss_weights["perceptual"] == 0.0
    with pytest.raises(ValueError, match="perceptual must be one of none, stlpips, lpips"):
        TrainConfig.from_dict({**base, "perceptual": "vgg"})
