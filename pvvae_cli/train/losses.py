"""Training losses of the PV-VAE objective (Eq. 1): L = w_mse L_MSE + w_motion L_Diff + w_perceptual L_perceptual
+ w_gan L_GAN + w_kl L_KL. The paper's perceptual term is LPIPS; here it is ST-LPIPS (alex) or LPIPS
(``--perceptual``), whichever network can be had.

All pixel inputs are ``(B, 3, T, H, W)`` in [-1, 1]. Reductions are means over every pixel value, so the
weights do not depend on the clip size; the KL term is summed over latent values and divided by the number of
input pixel values, which keeps the ratio of taming/latent-diffusion-style losses (``LPIPSWithDiscriminator``),
whose reconstruction and KL terms are both sums: KL weights such as VidTok's 1e-6 keep their meaning here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvvae_cli.models.posterior import DiagonalGaussian


def mse_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every pixel value."""
    return F.mse_loss(recon.float(), target.float())


def motion_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Motion-aware loss (PV-VAE §3.1): MSE between adjacent-frame differences of ``recon`` and ``target``.

    Penalises getting the *change* wrong, so copying a static background cannot dominate the objective. Zero
    for single-frame clips."""
    if recon.shape[2] < 2:
        return recon.float().sum() * 0.0  # keeps the graph (and the dtype) for uniform handling
    d_recon = recon[:, :, 1:].float() - recon[:, :, :-1].float()
    d_target = target[:, :, 1:].float() - target[:, :, :-1].float()
    return F.mse_loss(d_recon, d_target)


def kl_loss(posterior: DiagonalGaussian, pixels_per_sample: int) -> torch.Tensor:
    """KL(q || N(0, I)) summed over latent values, averaged over the batch, divided by pixel values per sample."""
    return posterior.kl().float().mean() / pixels_per_sample


class PerceptualLoss(nn.Module):
    """An image distance (``net(a, b) -> (N, ...)``, inputs ``(N, 3, H, W)`` in [-1, 1]) between reconstruction and
    target, frame by frame (``(B*T, 3, H, W)``), mean over frames. The network is frozen; gradients reach
    ``recon``.

    ``max_frames`` evaluates an evenly spaced subset of frames to bound the cost (0 = all frames)."""

    def __init__(self, net: nn.Module, max_frames: int = 0) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.max_frames = max_frames

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = recon.shape[2]
        if self.max_frames and t > self.max_frames:
            idx = torch.linspace(0, t - 1, self.max_frames).round().long().to(recon.device)
            recon, target = recon.index_select(2, idx), target.index_select(2, idx)
        frames = recon.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        ref = target.transpose(1, 2).flatten(0, 1)
        return self.net(frames.float(), ref.float()).mean()


def build_perceptual_loss(kind: str, lpips_net: str = "alex", max_frames: int = 0,
                          random_backbone: bool = False) -> PerceptualLoss:
    """The perceptual term ``kind``: ``stlpips`` (ST-LPIPS (alex), from ``$PVVAE_STLPIPS`` or the metrics cache
    that ``pvvae setup-metrics`` fills) or ``lpips`` (torchvision's ImageNet backbone; ``random_backbone=True``
    only for testing the wiring). Raises ``perceptual.MetricUnavailable`` with the fix if the weights are absent."""
    if kind == "stlpips":
        from pvvae_cli.metrics.network_files import STLPIPS_SOURCE, resolve_network_file
        from pvvae_cli.metrics.stlpips import load_stlpips

        return PerceptualLoss(load_stlpips(resolve_network_file(STLPIPS_SOURCE)), max_frames)
    if kind == "lpips":
        from pvvae_cli.metrics.perceptual import load_lpips

        return PerceptualLoss(load_lpips(lpips_net, random_backbone=random_backbone), max_frames)
    raise ValueError(f"unknown perceptual loss {kind!r}; choose stlpips or lpips")


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)), halved."""
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def generator_adv_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean D(fake)."""
    return -fake_logits.float().mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's (taming-transformers) balance: ``||grad_W rec|| / (||grad_W gan|| + 1e-4)`` with ``W`` the
    decoder's last layer, so the adversarial gradient reaching the decoder is ``gan_weight`` times the size of
    the reconstruction gradient whatever the scale of the discriminator's logits. A constant (no gradient)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.float().norm() / (g_gan.float().norm() + 1e-4)).clamp(0.0, max_weight).detach()


def reconstruction_terms(
    recon: torch.Tensor,
    target: torch.Tensor,
    posterior: DiagonalGaussian | None,
    weights: dict[str, float],
    perceptual: PerceptualLoss | None = None,
    pixels_per_sample: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every non-adversarial term with a non-zero weight, unweighted: ``mse``, ``motion``, ``perceptual``, ``kl``.

    ``weights`` maps term names to weights (``mse``, ``motion``, ``perceptual``, ``kl``); a term whose weight is 0
    is not computed. ``posterior=None`` (frozen encoder) skips the KL term. Combine with ``weighted_sum``."""
    terms: dict[str, torch.Tensor] = {}
    if weights.get("mse", 0.0):
        terms["mse"] = mse_loss(recon, target)
    if weights.get("motion", 0.0):
        terms["motion"] = motion_loss(recon, target)
    if weights.get("perceptual", 0.0):
        if perceptual is None:
            raise ValueError("perceptual weight is non-zero but no PerceptualLoss was given")
        terms["perceptual"] = perceptual(recon, target)
    if weights.get("kl", 0.0) and posterior is not None:
        terms["kl"] = kl_loss(posterior, pixels_per_sample or target[0].numel())
    return terms


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum(weights[name] * term)`` over the given terms."""
    total = None
    for name, value in terms.items():
        part = weights[name] * value
        total = part if total is None else total + part
    if total is None:
        raise ValueError("every loss weight is zero: nothing to train")
    return total
