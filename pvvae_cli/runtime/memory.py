"""How much device memory a training step needs, estimated without allocating it.

The model is built and one training forward is run under ``FakeTensorMode``: every tensor carries its shape, dtype
and strides but no data, so ``preset:base`` at batch 4, 17x256x256 (tens of GiB) is estimated in seconds on any
machine. The activations are counted as autograd keeps them: every tensor saved for backward passes through
``saved_tensors_hooks``, and the unique storages among them, parameters excluded, are summed (a view and its base
count once; a bf16 copy of a weight made by autocast counts, since backward keeps it). With checkpointing on, a
checkpointed block's inputs are saved through the same hooks and what it computes inside is not, which is exactly
what it keeps.

Mixed precision is modelled with the CPU autocast policy as a stand-in for CUDA's (fake tensors here live on the
CPU): for these models the two cast the same ops (convolutions, matmuls, attention) to the low precision, and
norms and losses run in fp32 either way.

What the figures leave out: the transient memory of backward itself (activation gradients of the widest layer and,
with checkpointing, one block's recomputed activations at a time), the allocator's fragmentation, the CUDA
context, and the perceptual and GAN networks (and their activations) when those terms are on. Plan for some
headroom above ``total``.

Use::

    est = estimate_training_memory(get_preset("base"), batch=4, frames=17, height=256, width=256,
                                   dtype=torch.bfloat16, grad_checkpoint=True)
    print(est.format())
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

GIB = 1024**3
STAGES = ("image", "video", "decoder")  # as TrainConfig.stage
DEFAULT_LOSS_WEIGHTS = {"mse": 1.0, "motion": 1.0}  # the terms whose activations scale with the clip


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step holds on the device, by kind (see the module docstring for what is left out).

    ``optimizer_bytes``: AdamW's two fp32 moments per trainable parameter; ``ema_bytes``: one fp32 shadow per
    trainable parameter when an EMA is kept; ``activation_bytes``: the tensors the forward saves for backward."""

    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    ema_bytes: int
    activation_bytes: int
    num_parameters: int
    num_trainable: int
    description: str = ""

    @property
    def total_bytes(self) -> int:
        return (self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.ema_bytes
                + self.activation_bytes)

    def format(self) -> str:
        """A short table in GiB, e.g. for ``--estimate-memory``."""
        rows = [
            (f"parameters ({self.num_parameters / 1e6:.1f} M)", self.parameter_bytes),
            (f"gradients ({self.num_trainable / 1e6:.1f} M trainable)", self.gradient_bytes),
            ("AdamW state (2 x fp32)", self.optimizer_bytes),
            ("EMA", self.ema_bytes),
            ("saved activations", self.activation_bytes),
            ("total", self.total_bytes),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [self.description] if self.description else []
        lines += [f"  {name:<{width}}  {nbytes / GIB:8.2f} GiB" for name, nbytes in rows]
        lines.append("  (not counted: backward's transient buffers, perceptual/GAN networks, allocator overhead)")
        return "\n".join(lines)


class SavedTensors:
    """Context manager: the unique storages of every tensor autograd saves for backward inside it, real or fake.

    ``nbytes`` sums them, leaving out the storages of ``exclude`` (the parameters). Inside a checkpointed block
    only the block's inputs reach these hooks (checkpoint stashes them through the same mechanism), so the sum is
    what the graph really keeps either way. The saved tensors are held until the context object is dropped."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = list(exclude)  # kept alive, so their storage keys stay theirs
        self._storages: dict[int, torch.Tensor] = {}
        self.count = 0  # saved tensors seen (before de-duplication by storage)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        self._storages.setdefault(t.untyped_storage()._cdata, t)  # the tensor keeps its storage (and key) alive
        return t

    def __enter__(self) -> SavedTensors:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        excluded = {t.untyped_storage()._cdata for t in self._exclude}
        return sum(t.untyped_storage().nbytes() for key, t in self._storages.items() if key not in excluded)


def _autocast(dtype: torch.dtype):
    # The CPU policy stands in for CUDA's (module docstring); fp32 runs without autocast, as the trainers do.
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


def _state_bytes(model: nn.Module, trainable: list[nn.Parameter], ema: bool, activations: int,
                 description: str) -> MemoryEstimate:
    n_train = sum(p.numel() for p in trainable)
    train_bytes = sum(p.numel() * p.element_size() for p in trainable)
    return MemoryEstimate(
        parameter_bytes=sum(p.numel() * p.element_size() for p in model.parameters())
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        gradient_bytes=train_bytes,
        optimizer_bytes=2 * 4 * n_train,
        ema_bytes=train_bytes if ema else 0,
        activation_bytes=activations,
        num_parameters=sum(p.numel() for p in model.parameters()),
        num_trainable=n_train,
        description=description,
    )


def _build(model: Any) -> nn.Module:
    """A fresh model from a config, a model (its config) or a zero-argument builder; call under the fake mode."""
    if isinstance(model, nn.Module):
        return type(model)(model.config)
    if callable(model) and not hasattr(model, "to_dict"):
        return model()
    from pvvae_cli.models.registry import build_model

    return build_model(model)


def estimate_training_memory(
    model: Any,
    batch: int,
    frames: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.bfloat16,
    grad_checkpoint: bool = False,
    stage: str = "video",
    ema: bool = False,
    dropped: int = 0,
    loss_weights: dict[str, float] | None = None,
) -> MemoryEstimate:
    """The memory of one autoencoder training step (what ``train.trainer`` runs: ``PredictiveVAE`` forward with
    ``dropped`` trailing latent groups dropped, the reconstruction terms, backward), without allocating it.

    ``model``: an autoencoder config (e.g. ``models.registry.get_preset("base")``), a model (only its config is
    used: nothing of it is copied), or a zero-argument function building one. Pixels are ``(batch, 3, frames,
    height, width)``; ``dtype``: the autocast precision (``torch.float32``: none); ``grad_checkpoint``: as
    ``set_grad_checkpointing(True)``; ``stage``: ``image``/``video`` train everything, ``decoder`` freezes the
    encoder and the padding token and runs the encoder without autograd (as ``TrainConfig.stage``); ``ema``: count
    an EMA shadow. ``dropped = 0`` (nothing dropped, the default) is the step's worst case. ``loss_weights``: as
    ``TrainConfig.loss_weights`` (default MSE + motion; the KL term is negligible, a perceptual term is not
    modelled). Raises ``ValueError`` for an unknown stage or a clip the model cannot take."""
    from pvvae_cli.train import losses
    from pvvae_cli.train.objective import PredictiveVAE

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
    weights["perceptual"] = 0.0  # its network is not modelled (module docstring)
    with FakeTensorMode():
        vae = _build(model)
        vae.train()
        if grad_checkpoint:
            vae.set_grad_checkpointing(True)
        if stage == "decoder":  # train.build.trainable_parameters' rule for the decoder stage
            for p in vae.encoder_parameters():
                p.requires_grad_(False)
            if vae.padding_token is not None:
                vae.padding_token.requires_grad_(False)
        trainable = [p for p in vae.parameters() if p.requires_grad]
        x = torch.empty(batch, 3, frames, height, width)  # (B, 3, T, H, W) pixels (no values: fake)
        vae.check_pixels(x)
        with SavedTensors(exclude=vae.parameters()) as saved, _autocast(dtype):
            out = PredictiveVAE(vae)(x, dropped, sample=True, encoder_grad=stage != "decoder")
            posterior = out.posterior if stage != "decoder" else None
            terms = losses.reconstruction_terms(out.recon, x, posterior, weights,
                                                pixels_per_sample=x[0, :, : out.kept].numel())
            losses.weighted_sum(terms, weights)
        activations = saved.nbytes
    name = getattr(getattr(vae, "config", None), "name", type(vae).__name__)
    precision = str(dtype).removeprefix("torch.")
    description = (f"{name}: batch {batch}, {frames}x{height}x{width}, {precision}, {stage} stage, "
                   f"checkpointing {'on' if grad_checkpoint else 'off'}")
    return _state_bytes(vae, trainable, ema, activations, description)


def estimate_gen_training_memory(
    config: Any,
    batch: int,
    dtype: torch.dtype = torch.bfloat16,
    grad_checkpoint: bool = False,
    ema: bool = False,
) -> MemoryEstimate:
    """The memory of one gen (DiT) training step (the flow loss's forward, as ``gen.trainer`` runs it), without
    allocating it. ``config``: a ``GenConfig`` whose latent fields give the clip ``(C, t, h, w)`` (with a class
    label when it is conditional); other arguments as ``estimate_training_memory``."""
    from pvvae_cli.gen.flow import flow_loss
    from pvvae_cli.gen.model import LatteDiT

    generator = torch.Generator().manual_seed(0)  # draws on fake tensors: no values, the seed does not matter
    with FakeTensorMode():
        model = LatteDiT(config).train()
        if grad_checkpoint:
            model.set_grad_checkpointing(True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        x0 = torch.empty(batch, *config.latent_shape)  # (B, C, t, h, w) normalised latents
        y = torch.zeros(batch, dtype=torch.long) if config.conditional else None
        with SavedTensors(exclude=model.parameters()) as saved, _autocast(dtype):
            flow_loss(model, x0, y, generator, null_class=config.num_classes)
        activations = saved.nbytes
    c, t, h, w = config.latent_shape
    precision = str(dtype).removeprefix("torch.")
    description = (f"gen {config.name}: batch {batch}, latents {c}x{t}x{h}x{w}, {precision}, "
                   f"checkpointing {'on' if grad_checkpoint else 'off'}")
    return _state_bytes(model, trainable, ema, activations, description)


__all__ = ["MemoryEstimate", "SavedTensors", "estimate_gen_training_memory", "estimate_training_memory"]
