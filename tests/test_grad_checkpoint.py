"""Activation checkpointing (``set_grad_checkpointing``): for every trainable family and the gen DiT, the same loss
and gradients as without it from the same weights and input, fewer tensors saved for backward, a training run whose
loss curve does not move, and streaming / evaluation untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from wan_reference import TINY_DIFFUSERS

from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.models.ivvae.model import IVVAE
from pvvae_cli.models.protocol import TrainableAutoencoder
from pvvae_cli.models.pvvae.model import VideoVAE
from pvvae_cli.models.wan.checkpoint import config_from_diffusers
from pvvae_cli.models.wan.model import WanVAE
from pvvae_cli.runtime.memory import SavedTensors
from pvvae_cli.train.losses import adaptive_gan_weight, kl_loss, motion_loss, mse_loss

REL = 1e-5  # relative tolerance on the loss and on each gradient (the issue's)


def perturbed(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every weight moved off its initial value (zero-initialised branches too), so every gradient is non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def wan_tiny(arch: str) -> WanVAE:
    return WanVAE(config_from_diffusers({"_class_name": "AutoencoderKLWan", **TINY_DIFFUSERS[arch]}, source="test"))


AUTOENCODERS = {
    "pvvae-tiny": lambda: VideoVAE.from_preset("tiny"),
    "pvvae-tiny-shortcut-refiner": lambda: VideoVAE.from_preset("tiny", linear_shortcut=True, refiner_channels=4,
                                                                refiner_blocks=1),
    "ivvae-tiny": lambda: IVVAE.from_preset("ivvae-tiny"),
    "wan2.1-tiny": lambda: wan_tiny("wan2.1"),
    "wan2.2-tiny": lambda: wan_tiny("wan2.2"),
}


def vae_step(model, x: torch.Tensor, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], SavedTensors]:
    """One training forward + backward (MSE + motion + KL, posterior sampled with a fixed generator) of ``model``
    on ``x`` ``(B, 3, T, H, W)``: the loss, the gradients by name, and what autograd saved."""
    model.train()
    model.set_grad_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(3)
    with SavedTensors(exclude=model.parameters()) as saved:
        recon, posterior = model(x, sample=True, generator=generator)
        loss = mse_loss(recon, x) + motion_loss(recon, x) + 1e-3 * kl_loss(posterior, x[0].numel())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.set_grad_checkpointing(False)
    return loss.detach(), grads, saved


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a - b).norm().item()
    assert err <= REL * max(b.norm().item(), 1e-12), f"{what}: |difference| {err:.3g} vs |value| {b.norm():.3g}"


@pytest.mark.parametrize("name", list(AUTOENCODERS))
def test_same_loss_and_gradients_with_fewer_saved_tensors(name: str) -> None:
    torch.manual_seed(0)
    model = perturbed(AUTOENCODERS[name]())
    assert isinstance(model, TrainableAutoencoder)
    s = model.config.spatial_compression
    x = torch.rand(2, 3, 9, 2 * s, 2 * s) * 2 - 1
    loss_off, grads_off, saved_off = vae_step(model, x, checkpointing=False)
    loss_on, grads_on, saved_on = vae_step(model, x, checkpointing=True)
    assert_close(loss_on, loss_off, "loss")
    assert grads_on.keys() == grads_off.keys()
    used = {n for n, _ in model.named_parameters()} - {"padding_token"}  # appended for dropped frames only
    assert grads_off.keys() == used, "every parameter must get a gradient at T=9"
    for key in grads_off:
        assert_close(grads_on[key], grads_off[key], key)
    # it really engaged: the checkpointed blocks' inner activations were not saved
    assert saved_on.count < saved_off.count / 2, (saved_on.count, saved_off.count)
    assert saved_on.nbytes < saved_off.nbytes / 2, (saved_on.nbytes, saved_off.nbytes)


def test_three_optimiser_steps_give_the_same_loss_curve() -> None:
    def curve(checkpointing: bool) -> list[float]:
        torch.manual_seed(0)
        model = perturbed(VideoVAE.from_preset("tiny"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.rand(2, 3, 9, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
        losses = []
        for _ in range(3):
            loss, _, _ = vae_step(model, x, checkpointing)
            opt.step()
            losses.append(float(loss))
        return losses

    off, on = curve(False), curve(True)
    assert all(abs(a - b) <= REL * abs(b) for a, b in zip(on, off, strict=True)), (on, off)
    assert off[-1] < off[0]  # it trained


def test_streaming_and_evaluation_are_unaffected() -> None:
    """Switched on, a model in training mode with autograd on still streams exactly (checkpointing a streamed
    block would update its cache twice), and an eval pass saves as much as without it."""
    torch.manual_seed(0)
    model = perturbed(VideoVAE.from_preset("tiny"))
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    model.set_grad_checkpointing(True)
    model.train()
    one = model.encode(x).mean
    chunked = model.encode_chunked(x, chunk_latents=1).mean
    assert (chunked - one).abs().max() <= 1e-5
    assert (model.decode_chunked(one, chunk_latents=1) - model.decode(one)).abs().max() <= 1e-5

    counts = []
    for on in (False, True):
        model.set_grad_checkpointing(on)
        model.eval()
        with SavedTensors() as saved:
            model(x)[0].sum()
        counts.append(saved.count)
    assert counts[0] == counts[1] > 0


def test_dit_same_loss_and_gradients_with_fewer_saved_tensors() -> None:
    torch.manual_seed(0)
    model = perturbed(LatteDiT.from_preset("tiny", latent_channels=8, latent_frames=3, latent_height=4,
                                           latent_width=6, num_classes=2))
    x = torch.randn(2, 8, 3, 4, 6)
    t = torch.tensor([0.3, 0.8])
    y = torch.tensor([0, 1])
    target = torch.randn_like(x)

    def step(checkpointing: bool):
        model.train()
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        with SavedTensors(exclude=model.parameters()) as saved:
            loss = F.mse_loss(model(x, t, y), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved

    loss_off, grads_off, saved_off = step(False)
    loss_on, grads_on, saved_on = step(True)
    assert_close(loss_on, loss_off, "loss")
    for key in grads_off:
        assert_close(grads_on[key], grads_off[key], key)
    assert saved_on.count < saved_off.count / 2, (saved_on.count, saved_off.count)


def test_adaptive_gan_weight_path_on_single_frames() -> None:
    """The GAN stage takes two ``autograd.grad(..., retain_graph=True)`` before ``backward`` (the adaptive weight on
    the decoder's last layer): checkpointed blocks recompute for each, with the same result; image-stage clips."""
    def run(checkpointing: bool) -> tuple[float, torch.Tensor]:
        torch.manual_seed(0)
        model = perturbed(VideoVAE.from_preset("tiny")).train()
        model.set_grad_checkpointing(checkpointing)
        x = torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
        recon, _ = model(x, generator=torch.Generator().manual_seed(3))
        rec = mse_loss(recon, x)
        adv = -(recon * recon.detach().roll(1, -1)).mean()  # a stand-in for -D(recon)
        scale = adaptive_gan_weight(rec, adv, model.last_decoder_weight())
        (rec + 0.2 * scale * adv).backward()
        return float(scale), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (scale_off, grads_off), (scale_on, grads_on) = run(False), run(True)
    assert abs(scale_on - scale_off) <= REL * abs(scale_off)
    assert_close(grads_on, grads_off, "gradients")
