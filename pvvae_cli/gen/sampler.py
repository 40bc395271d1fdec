"""The Euler sampler of a rectified flow, with classifier-free guidance: a free function that takes the model.

Integrates ``dx/dt = v(x, t)`` from ``t = 1`` (noise) to ``t = 0`` (data) on ``steps`` uniform steps (optionally
shifted with ``flow.shift_time``, which spends more steps near the noise end): ``x <- x + (t_next - t) * v``.
With class labels and ``cfg_scale = w`` the velocity is ``v_u + w (v_c - v_u)`` on every channel (``v_u``: the
null class), so ``w = 1`` is the plain conditional model and ``w = 0`` the unconditional one.
"""

from __future__ import annotations

import numpy as np
import torch

from pvvae_cli.gen.flow import Model, shift_time


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """``steps + 1`` float32 times from 1 down to 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32), shift)


def initial_noise(shape: tuple[int, ...], seed: int, start: int = 0) -> torch.Tensor:
    """N(0, I) float32 ``shape`` (``(B, C, t, h, w)``) on the CPU; row ``i`` is sample ``start + i``'s noise, drawn
    from its own generator, seeded from ``(seed, start + i)``: the same starting noise (hence samples) whatever
    the device and however the samples are split into batches."""
    out = torch.empty(shape, dtype=torch.float32)
    for i in range(shape[0]):
        # SeedSequence: well-separated streams for neighbouring (seed, index) pairs; 2^64 keeps negative seeds valid
        state = np.random.SeedSequence(seed % 2**64, spawn_key=(start + i,)).generate_state(1, np.uint64)[0]
        out[i] = torch.randn(shape[1:], generator=torch.Generator().manual_seed(int(state)), dtype=torch.float32)
    return out


@torch.no_grad()
def euler_sample(model: Model, noise: torch.Tensor, steps: int = 100, y: torch.Tensor | None = None,
                 cfg_scale: float = 1.0, null_class: int | None = None, shift: float = 1.0) -> torch.Tensor:
    """Integrate the flow from ``noise`` (``x`` at ``t = 1``, ``(B, C, t, h, w)``) to ``t = 0``; returns float32
    latents of the same shape (in the model's normalised space). ``y``: class labels ``(B,)`` (``None``:
    unconditional); ``null_class`` is required for guidance (``cfg_scale != 1``)."""
    guided = y is not None and cfg_scale != 1.0
    if guided and null_class is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs the model's null class")
    x = noise.float()
    ts = time_grid(steps, shift).to(x.device)
    b = x.shape[0]
    for i in range(steps):
        t = ts[i].expand(b)
        if guided:
            # one batch of 2B: the conditional half, then the unconditional (null-class) half
            labels = torch.cat([y, torch.full_like(y, null_class)])
            v_c, v_u = model(torch.cat([x, x]), torch.cat([t, t]), labels).float().chunk(2)
            v = v_u + cfg_scale * (v_c - v_u)
        else:
            v = model(x, t, y).float()
        x = x + (ts[i + 1] - ts[i]) * v
    return x
