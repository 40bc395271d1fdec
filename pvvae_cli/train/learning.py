"""Does a network learn? Overfitting a few fixed clips, and the plain conv autoencoder it is compared with.

Tests of shapes and invariants cannot see a network that does not learn (the PV-VAE network once stayed at the
mean colour, 11.8 dB, where a 20 k-parameter conv autoencoder reached 24.5 dB). ``overfit`` trains any
reconstruction function on fixed clips with Adam and records PSNR against steps and wall time; the learning
tests (``tests/test_learning.py``) and the learning benchmark (``benchmarks/bench_learning.py``) both use it,
with ``PlainConvAE`` as the reference of known behaviour.

Layout: clips ``(B, 3, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class PlainConvAE(nn.Module):
    """A plain 2-D conv autoencoder applied to each frame: the learning reference.

    Encoder: conv 3x3 (3 -> ``widths[0]``), then one stage per entry of ``widths[1:]``, each a stride-2 3x3 conv +
    GroupNorm(1) + SiLU, then a 1x1 conv to ``latent_channels``; the decoder mirrors it with nearest upsampling.
    With the defaults (8, 16, 16, 16, 16) and 8 latent channels: 16x spatial compression (a 64x64 frame becomes
    4x4x8, the latent of the ``tiny`` preset for one frame) and 17,211 parameters.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 16, 16, 16, 16), latent_channels: int = 8) -> None:
        super().__init__()

        def stage(i: int, o: int, up: bool) -> nn.Sequential:
            conv = nn.Conv2d(i, o, 3, 1 if up else 2, 1)
            layers = [nn.Upsample(scale_factor=2, mode="nearest"), conv] if up else [conv]
            return nn.Sequential(*layers, nn.GroupNorm(1, o), nn.SiLU())

        w = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w[0], 3, 1, 1), *[stage(w[i], w[i + 1], False) for i in range(len(w) - 1)],
            nn.Conv2d(w[-1], latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w[-1], 1), *[stage(w[i], w[i - 1], True) for i in range(len(w) - 1, 0, -1)],
            nn.Conv2d(w[0], 3, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> same
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, 3, H, W)
        y = self.decoder(self.encoder(frames))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


def psnr_db(y: torch.Tensor, x: torch.Tensor) -> float:
    """PSNR in dB of ``y`` against ``x`` (both in [-1, 1]; ``y`` clamped), over the whole batch, peak 1 on [0, 1]."""
    mse = ((y.detach().float().clamp(-1, 1) - x.float()) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@dataclass(frozen=True)
class CurvePoint:
    step: int  # optimiser steps done
    psnr: float  # dB, of the model's output at this point (before the step's update)
    seconds: float  # wall time spent training so far


def overfit(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[nn.Parameter],
    clips: torch.Tensor,
    steps: int,
    lr: float,
    log_steps: Iterable[int] = (),
    dtype: torch.dtype = torch.float32,
) -> list[CurvePoint]:
    """Train ``reconstruct`` (clips -> reconstructions) on the fixed ``clips`` for ``steps`` Adam steps at ``lr``
    with the MSE loss; return the PSNR at each of ``log_steps`` and at the end (``step == steps``).

    ``dtype``: bf16 runs the forward under CPU/CUDA autocast (weights and optimiser stay fp32).
    """
    opt = torch.optim.Adam(params, lr=lr)
    device = clips.device
    wanted = set(log_steps)
    curve: list[CurvePoint] = []
    spent = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = reconstruct(clips)
            loss = F.mse_loss(y.float(), clips)
        if step in wanted or step == steps:
            curve.append(CurvePoint(step, psnr_db(y, clips), spent))
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        spent += time.perf_counter() - t0
    return curve


def vae_reconstruct(vae: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``decode(encode(x).mode())``: the deterministic reconstruction path of a VAE implementing the protocol."""
    return lambda x: vae.decode(vae.encode(x).mode())


def pytorch_default_init_(model: nn.Module) -> nn.Module:
    """Re-initialise ``model`` as it was before ``VideoVAE.initialize_weights`` was fixed: PyTorch's default init
    for every convolution (every tap random, variance ``1 / (3 fan_in)`` over all ``kt*kh*kw`` taps), random
    padding token, the posterior's log-variance bias at ``INITIAL_LOGVAR``.

    The baseline of the learning diagnosis (``benchmarks/diagnose_learning.py``), and the "random weights on every
    tap" that invariance tests (causality, chunked == one pass, tiling) need: the model's own init starts past
    temporal taps and residual branches at zero, which would let such tests pass without exercising them.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.reset_parameters()
        if hasattr(model, "INITIAL_LOGVAR"):
            model.encoder.conv_out.bias[model.config.latent_channels :].fill_(model.INITIAL_LOGVAR)
        if getattr(model, "padding_token", None) is not None:
            model.padding_token.normal_()
    return model
