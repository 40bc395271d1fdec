"""Where a model leaves mixed precision: the layers that produce the posterior run in fp32.

Under bf16 autocast a convolution's output is bf16: 8 significant bits, an ulp of 0.25 at ``|z| >= 32`` (the shipped
model's first latent channel has a std of 20), and that rounding would be stored in every latent file. The last
projection(s) to the posterior moments, and any add that forms the mean, are a small part of the compute (a few
convolutions on the latent grid), so the families run them in fp32 inside ``fp32_posterior``.
"""

from __future__ import annotations

import contextlib

import torch


def fp32_posterior(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off for ``x``'s device (a no-op when it is not on, or on a device type autocast does not
    know, such as ``meta``). Feed the layers inside fp32 tensors (``x.float()``): with autocast off they compute in
    the dtype they are given."""
    kind = x.device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()
