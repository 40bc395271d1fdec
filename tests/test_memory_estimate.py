"""``runtime.memory``: the fake-tensor estimate of a training step's memory against a real step, checkpointing's
effect on it, and the audit's figures (F5) for the large presets, computed without allocating them."""

from __future__ import annotations

import gc
import resource

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pvvae_cli.gen.config import get_preset as gen_preset
from pvvae_cli.gen.flow import flow_loss
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.models.registry import build_model, get_preset
from pvvae_cli.runtime.device import cpu_bf16_supported
from pvvae_cli.runtime.memory import (
    GIB,
    SavedTensors,
    estimate_gen_training_memory,
    estimate_training_memory,
)
from pvvae_cli.train import losses
from pvvae_cli.train.objective import PredictiveVAE

# The estimate and a real step run the same code on the same shapes, so they agree to the byte in practice; the
# allocation-based measurement below also sees a few bytes the graph holds besides saved tensors (scalars).
TOL = 0.01
WEIGHTS = {"mse": 1.0, "motion": 1.0}
DTYPES = [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not cpu_bf16_supported(), reason="a real bf16 step needs CPU bf16 convolutions"))]


class AllocatedStorages(TorchDispatchMode):
    """Every storage an op creates inside the mode, by weak reference: those still alive once only the loss is
    held are what the autograd graph keeps (measured from allocations, not from the saved-tensor hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.refs.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        return out

    def alive_bytes(self, exclude: list[torch.Tensor]) -> int:
        """Bytes of the storages still alive, leaving out those of ``exclude`` (parameters: ops return views of
        them, e.g. a weight sliced inside a checkpointed block)."""
        gc.collect()
        excluded = {t.untyped_storage()._cdata for t in exclude}
        return sum(n for key, (ref, n) in self.refs.items() if not ref.expired() and key not in excluded)


def real_vae_step(name: str, shape: tuple[int, ...], dtype: torch.dtype, checkpointing: bool) -> tuple[int, int]:
    """A real training forward of ``preset:name`` on pixels of ``shape``: (bytes the saved-tensor hooks see, bytes
    of the storages allocated during the step that are alive while only the loss is held)."""
    torch.manual_seed(0)
    vae = build_model(get_preset(name)).train()
    vae.set_grad_checkpointing(checkpointing)
    allocated = AllocatedStorages()
    with allocated, SavedTensors(exclude=vae.parameters()) as saved:
        x = torch.rand(shape) * 2 - 1
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = PredictiveVAE(vae)(x, 0)
            terms = losses.reconstruction_terms(out.recon, x, out.posterior, WEIGHTS,
                                                pixels_per_sample=x[0].numel())
            loss = losses.weighted_sum(terms, WEIGHTS)
    del out, terms, x
    hooked, alive = saved.nbytes, allocated.alive_bytes(list(vae.parameters()))
    loss.backward()  # the graph was whole
    return hooked, alive


@pytest.mark.parametrize("name", ["tiny", "ivvae-tiny"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_matches_a_real_step(name: str, dtype: torch.dtype, checkpointing: bool) -> None:
    shape = (2, 3, 9, 64, 64)
    est = estimate_training_memory(get_preset(name), *shape[:1], *shape[2:], dtype=dtype,
                                   grad_checkpoint=checkpointing)
    hooked, alive = real_vae_step(name, shape, dtype, checkpointing)
    assert abs(est.activation_bytes - hooked) <= TOL * hooked, (est.activation_bytes, hooked)
    assert abs(est.activation_bytes - alive) <= TOL * alive, (est.activation_bytes, alive)


def test_checkpointing_lowers_the_estimate_and_the_state_terms_add_up() -> None:
    cfg = get_preset("tiny")
    off = estimate_training_memory(cfg, 2, 9, 64, 64, torch.float32, grad_checkpoint=False, ema=True)
    on = estimate_training_memory(cfg, 2, 9, 64, 64, torch.float32, grad_checkpoint=True, ema=True)
    assert on.activation_bytes < off.activation_bytes / 2
    n = build_model(cfg).num_parameters()
    assert off.num_parameters == off.num_trainable == n
    assert off.parameter_bytes == off.gradient_bytes == off.ema_bytes == 4 * n
    assert off.optimizer_bytes == 8 * n
    assert off.total_bytes == 20 * n + off.activation_bytes  # parameters, gradients, EMA: 4 bytes each; AdamW: 8
    assert on.total_bytes - on.activation_bytes == off.total_bytes - off.activation_bytes
    text = on.format()
    assert "checkpointing on" in text and "saved activations" in text and text.count("GiB") == 6


def test_stages_builders_and_errors() -> None:
    cfg = get_preset("tiny")
    video = estimate_training_memory(cfg, 1, 9, 32, 32, torch.float32)
    decoder = estimate_training_memory(cfg, 1, 9, 32, 32, torch.float32, stage="decoder")
    model = build_model(cfg)
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    assert decoder.num_trainable == decoder_params and decoder.optimizer_bytes == 8 * decoder_params
    assert decoder.activation_bytes < video.activation_bytes  # the frozen encoder runs without autograd
    # a model (its config only) or a builder give the same figures as the config
    assert estimate_training_memory(model, 1, 9, 32, 32, torch.float32) == video
    assert estimate_training_memory(lambda: build_model(cfg), 1, 9, 32, 32, torch.float32) == video
    assert not any(p.is_meta for p in model.parameters())  # the model passed was not touched
    with pytest.raises(ValueError, match="stage"):
        estimate_training_memory(cfg, 1, 9, 32, 32, stage="pretrain")
    with pytest.raises(ValueError, match="multiples of 16"):
        estimate_training_memory(cfg, 1, 9, 40, 32)


def test_gen_estimate_matches_a_real_step_and_checkpointing_lowers_it() -> None:
    cfg = gen_preset("tiny").replace(latent_channels=8, latent_frames=3, latent_height=4, latent_width=6,
                                     num_classes=2)
    est = {ck: estimate_gen_training_memory(cfg, 4, torch.float32, grad_checkpoint=ck) for ck in (False, True)}
    assert est[True].activation_bytes < est[False].activation_bytes / 2
    model = LatteDiT(cfg).train()
    with SavedTensors(exclude=model.parameters()) as saved:
        x0 = torch.randn(4, *cfg.latent_shape)
        flow_loss(model, x0, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0), null_class=2)
    assert abs(est[False].activation_bytes - saved.nbytes) <= TOL * saved.nbytes
    assert est[False].num_parameters == sum(p.numel() for p in model.parameters())


def test_audit_figures_without_allocating_them() -> None:
    """The audit's F5 figures (bf16, 17x256x256, nothing dropped): base at batch 4 (76.1 GiB saved, more than this
    machine's memory), small at batch 4 (13.2 GiB) and base at batch 1 (19.5 GiB); checkpointing brings base at
    batch 4 under 25 GiB. Nothing of that size is allocated: the peak RSS grows by less than 1 GiB."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures = {
        (name, batch, ck): estimate_training_memory(get_preset(name), batch, 17, 256, 256, torch.bfloat16,
                                                    grad_checkpoint=ck).activation_bytes / GIB
        for name, batch, ck in [("base", 4, False), ("base", 4, True), ("small", 4, False), ("base", 1, False)]
    }
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before < GIB
    assert figures["base", 4, False] == pytest.approx(76.1, rel=0.2)
    assert figures["small", 4, False] == pytest.approx(13.2, rel=0.2)
    assert figures["base", 1, False] == pytest.approx(19.5, rel=0.2)
    assert figures["base", 4, True] < 25.0
