"""Activation (gradient) checkpointing, shared by every trainable family and the gen DiT.

A container module (an encoder, a decoder, a transformer) mixes in ``GradCheckpointing`` and runs each of its
blocks through ``self.run_block(block, *args, state=state)``. With checkpointing on, a block keeps only its inputs
for backward and recomputes its inner activations then (``torch.utils.checkpoint``, non-reentrant), which trades
one extra forward of the block for most of its activation memory. The block is the unit because recomputing it
materialises one block's activations at a time; a coarser unit (a whole resolution level) would save a few more
tensors but bring back most of a level's activations at once during backward.

What a block is, per family: each residual block of every level and the mid block (PV-VAE, IV-VAE, Wan; IV-VAE's
level attentions too), the decoder's output layers (``to_pixels``: norm, SiLU, conv; three full-resolution
activations kept, a cheap recompute) and PV-VAE's pixel refiner; each transformer block of the gen DiT. The
resampling layers between levels are not checkpointed: each keeps about one activation of its output size, which a
checkpoint would trade for its input plus the recompute of the level's most expensive convolution. For
``preset:base`` at batch 4, 17x256x256 in bf16 this takes the saved activations from 76.1 to 15.1 GiB
(``runtime.memory``).

Checkpointing engages only where it is safe and useful: the module is in training mode, autograd is recording, and
the call is a whole-clip pass (``state is None``). The streaming path (``encode_chunk``/``decode_chunk`` with a
``StreamState``) is never checkpointed: recomputing a streamed block would update the stream's cache and its
"first call" marks a second time. RNG state is stashed and restored for the recomputation (the default), so a
block with random ops recomputes the same values; none of ours has any today.

Nothing here changes parameter names or the state dict: the flag is a plain attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class GradCheckpointing:
    """Mixin for an ``nn.Module`` whose forward runs its blocks through ``run_block``; off by default."""

    grad_checkpointing: bool = False

    def run_block(self, block: Callable[..., Any], *args: Any, state: Any = None) -> Any:
        """``block(*args, state)`` when ``state`` is given (streaming: never checkpointed), else ``block(*args)``,
        through ``torch.utils.checkpoint`` when checkpointing is on and this is a training pass with autograd."""
        if state is not None:
            return block(*args, state)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch checkpointing on (or off) in every ``GradCheckpointing`` module of ``model``; returns how many there
    are (0 means the model has no checkpointed blocks)."""
    count = 0
    for module in model.modules():
        if isinstance(module, GradCheckpointing):
            module.grad_checkpointing = bool(enabled)
            count += 1
    return count
