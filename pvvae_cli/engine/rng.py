"""Every random stream of a run, captured in checkpoints so a resumed run draws exactly what the uninterrupted
one would have, and restored as far as the machine allows.

A stream can only continue on the kind of device that made it: a CPU generator's state is a 5056-byte Mersenne
Twister, a CUDA generator's a 16-byte Philox seed and offset, and ``set_state`` refuses the other. A run resumed on
another device kind (a CPU run continued on a GPU, or back) therefore reseeds those generators from
``(seed, rank, step)``, with a warning: it continues, not bit for bit.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

Generators = dict[str, random.Random | torch.Generator]


def rng_state(generators: Generators) -> dict:
    """Python's, NumPy's, torch's (and CUDA's) global streams plus each of ``generators`` under its name, in a
    form ``torch.load(weights_only=True)`` reads back. Each torch generator's device kind is recorded too."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state as plain lists so the checkpoint loads with weights_only=True
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "devices": {name: gen.device.type for name, gen in generators.items() if isinstance(gen, torch.Generator)},
    }
    for name, gen in generators.items():
        state[name] = gen.getstate() if isinstance(gen, random.Random) else gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's (runtime.distributed sets it)
    return state


def restore_rng(saved: list[dict], rank: int, world: int, generators: Generators, shared: tuple[str, ...] = (),
                warn: Callable[[str], None] = print, reseed: Callable[[str], int] | None = None) -> None:
    """Restore this rank's streams from a checkpoint's list of ``rng_state`` (one per rank).

    Written by another number of processes, the per-rank streams cannot continue: they restart (with a warning)
    and only the ``shared`` generators, which draw the same on every rank, continue from rank 0's state. A torch
    generator whose saved state came from another device kind is reseeded with ``reseed(name)`` (default: left
    as built), with a warning."""
    if len(saved) != world:
        warn(f"checkpoint was written by {len(saved)} processes, now {world}: the random streams restart (the run "
             "continues, but not bit-for-bit)")
        for name in shared:
            _set_generator_state(name, generators[name], saved[0], warn, reseed)
        return
    state = saved[rank]
    random.setstate(_tuplify(state["python"]))
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    torch.set_rng_state(state["torch"])
    for name, gen in generators.items():
        _set_generator_state(name, gen, state, warn, reseed)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _set_generator_state(name: str, gen, state: dict, warn: Callable[[str], None],
                         reseed: Callable[[str], int] | None) -> None:
    saved = state[name]
    if isinstance(gen, random.Random):
        gen.setstate(_tuplify(saved))  # a checkpoint may hold Python's tuples as lists
        return
    # Checkpoints before 0.10 did not record the device kind: a state of the wrong size tells it too.
    saved_kind = state.get("devices", {}).get(name)
    try:
        if saved_kind not in (None, gen.device.type):
            raise RuntimeError(f"state of a {saved_kind} generator")
        gen.set_state(saved)
    except RuntimeError as e:
        if reseed is not None:
            gen.manual_seed(reseed(name))
        warn(f"random stream {name!r} was saved on another kind of device ({e}); it is reseeded here: the run "
             "continues, but not bit-for-bit")


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x
