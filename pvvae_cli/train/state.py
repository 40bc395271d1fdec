"""Training state beside the model and optimiser: the learning-rate schedule, an EMA of the weights, and every
random stream (so a resumed run draws exactly what the uninterrupted one would have).

Nothing here knows which model is trained.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

Generators = dict[str, random.Random | torch.Generator]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base lr at update ``step``: linear warm-up, then cosine from 1 down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the trainable parameters (frozen ones are left out, so they stay
    bit-identical in the exported weights)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    def averaged(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged weights (``model`` itself is left as it is)."""
        shadow = copy.deepcopy(model)
        self.copy_to(shadow)
        return shadow

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def rng_state(generators: Generators) -> dict:
    """Python's, NumPy's, torch's (and CUDA's) global streams plus each of ``generators`` under its name, in a
    form ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state as plain lists so the checkpoint loads with weights_only=True
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    for name, gen in generators.items():
        state[name] = gen.getstate() if isinstance(gen, random.Random) else gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, generators: Generators) -> None:
    """Restore what ``rng_state`` captured, into the global streams and ``generators``."""
    random.setstate(_tuplify(state["python"]))
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    torch.set_rng_state(state["torch"])
    for name, gen in generators.items():
        set_generator_state(gen, state[name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def restore_rng(saved: list[dict], rank: int, world: int, generators: Generators, shared: tuple[str, ...] = (),
                warn: Callable[[str], None] = print) -> None:
    """Restore this rank's streams from a checkpoint's list of ``rng_state`` (one per rank).

    Written by another number of processes, the per-rank streams cannot continue: they restart (with a warning)
    and only the ``shared`` generators, which draw the same on every rank, continue from rank 0's state."""
    if len(saved) == world:
        set_rng_state(saved[rank], generators)
        return
    warn(f"checkpoint was written by {len(saved)} processes, now {world}: the random streams restart (the run "
         "continues, but not bit-for-bit)")
    for name in shared:
        set_generator_state(generators[name], saved[0][name])


def set_generator_state(gen: random.Random | torch.Generator, saved) -> None:
    """One generator's state as ``rng_state`` stored it."""
    if isinstance(gen, random.Random):
        gen.setstate(_tuplify(saved))  # a checkpoint may hold Python's tuples as lists
    else:
        gen.set_state(saved)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x
