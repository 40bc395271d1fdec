"""An exponential moving average of a model's trainable weights (VAE and gen runs alike)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of the trainable parameters (frozen ones are left out, so they stay
    bit-identical in the exported weights). The shadows live where the parameters live: on resume they are copied
    into tensors on the parameters' device, whatever device the checkpoint was written or loaded on (a checkpoint
    is read with ``map_location="cpu"``; a GPU run must not then ``lerp_`` a CPU shadow towards a CUDA parameter)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        names = [n for n, _ in model.named_parameters() if n in self.shadow]
        params = dict(model.named_parameters())
        # one fused kernel per device and dtype instead of a Python loop over hundreds of tensors
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names], 1.0 - self.decay)

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

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy the saved shadows into the current ones (same names, on the parameters' device and dtype)."""
        saved = state["shadow"]
        if set(saved) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(saved)), sorted(set(saved) - set(self.shadow))
            raise ValueError(f"EMA state does not match the model's trainable parameters (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        for name, tensor in saved.items():
            self.shadow[name].copy_(tensor)
