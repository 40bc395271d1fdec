"""The published IV-VAE checkpoints' state-dict layout (``ali-vilab/iv-vae``, ``models/vae3d.py``) and the
explicit key map to ``IVVAE``'s, so that users who have a published ``.pth`` can convert it to a weights folder.

The reference names modules by position (``encoder.downsamples.7.residual.2.conv_3d.weight``); ``IVVAE`` by
role (``encoder.levels.1.0.conv1.conv_3d.weight``). The map is built by walking ``IVVAE`` in the reference's
module order, module kind by module kind, so it covers exactly the tensors of a given config. Tensors keep their
values; norm gains are stored there as ``(C, 1, 1[, 1])`` and here as ``(C,)`` (reshaped). The published files
hold no padding token: converted weights get the zero token a new model starts with.

Only configs the reference can express convert: ``channel_multipliers[0] == 1``, t4 with the two temporal stages
last (every preset here), ``attention`` and ``keyframe_compression`` on.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pvvae_cli.errors import PvvaeError
from pvvae_cli.models.ivvae.config import IVVAEConfig
from pvvae_cli.models.ivvae.layers import (
    AtrousHead,
    Downsample,
    FrameConv,
    HalfAttention,
    HalfRMSNorm,
    KTCConv,
    ResBlock,
    Upsample,
)
from pvvae_cli.models.ivvae.model import IVVAE

PAC_NAMES = ("PAC_0", "PAC_1", "PAC_3", "PAC_6", "PAC_9", "PAC_12")  # the head's branches, in AtrousHead's order


class ReferenceCheckpointError(PvvaeError, ValueError):
    """A reference checkpoint that does not match the config it is converted to."""


def _params(mine: str, ref: str, names: tuple[str, ...] = ("weight", "bias")) -> Iterator[tuple[str, str]]:
    for name in names:
        yield f"{mine}.{name}", f"{ref}.{name}"


def _module_pairs(module: nn.Module, mine: str, ref: str) -> Iterator[tuple[str, str]]:
    """``(IVVAE key, reference key)`` for every tensor of ``module`` (named ``mine`` here, ``ref`` there)."""
    if isinstance(module, ResBlock):
        parts = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
                 "skip": "shortcut"}
        for name, ref_name in parts.items():
            if getattr(module, name) is not None:
                yield from _module_pairs(getattr(module, name), f"{mine}.{name}", f"{ref}.{ref_name}")
    elif isinstance(module, HalfRMSNorm):
        yield f"{mine}.weight", f"{ref}.gamma"
    elif isinstance(module, KTCConv):
        yield from _params(f"{mine}.conv_2d", f"{ref}.conv_2d")
        yield from _params(f"{mine}.conv_3d", f"{ref}.conv_3d")
    elif isinstance(module, FrameConv):
        yield from _params(mine, f"{ref}.conv")
    elif isinstance(module, HalfAttention):
        for half, ref_half in (("attn_2d", "Attention_2d"), ("attn_3d", "Attention_3d")):
            yield f"{mine}.{half}.norm.weight", f"{ref}.{ref_half}.norm.gamma"
            yield from _params(f"{mine}.{half}.qkv", f"{ref}.{ref_half}.to_qkv")
            yield from _params(f"{mine}.{half}.proj", f"{ref}.{ref_half}.proj")
    elif isinstance(module, (Downsample, Upsample)):
        yield from _params(f"{mine}.conv_2d", f"{ref}.resample_2d.1")
        yield from _params(f"{mine}.conv_3d", f"{ref}.resample_3d.1")
        if module.time_conv is not None:
            yield from _params(f"{mine}.time_conv", f"{ref}.time_conv")
    elif isinstance(module, AtrousHead):
        for i, name in enumerate(PAC_NAMES):
            yield from _params(f"{mine}.branches.{i}", f"{ref}.{name}.conv")
        yield from _params(f"{mine}.fuse", f"{ref}.PAC_conv.conv")
    else:
        raise TypeError(f"no reference layout for {type(module).__name__}")


def key_map(model: IVVAE) -> dict[str, str]:
    """``IVVAE`` state-dict key -> the reference checkpoint's key, for every tensor but the padding token."""
    enc, dec = model.encoder, model.decoder
    pairs: list[tuple[str, str]] = []
    pairs += _module_pairs(enc.conv_in, "encoder.conv_in", "encoder.conv1")
    # The reference's encoder.downsamples is one sequence: each level's blocks, then its downsampling (and the
    # attention after the last downsampling).
    seq = []
    for i, level in enumerate(enc.levels):
        seq += [(f"encoder.levels.{i}.{j}", m) for j, m in enumerate(level)]
        if i < len(enc.downsamples):
            seq += [(f"encoder.downsamples.{i}.{j}", m) for j, m in enumerate(enc.downsamples[i])]
    for k, (name, m) in enumerate(seq):
        pairs += _module_pairs(m, name, f"encoder.downsamples.{k}")
    for k, m in enumerate(enc.mid):
        pairs += _module_pairs(m, f"encoder.mid.{k}", f"encoder.middle.{k}")
    pairs += _module_pairs(enc.norm_out, "encoder.norm_out", "encoder.head.0")
    pairs += _module_pairs(enc.head, "encoder.head", "encoder.head.2")
    pairs += _module_pairs(enc.quant_conv, "encoder.quant_conv", "conv1")
    pairs += _module_pairs(dec.post_quant_conv, "decoder.post_quant_conv", "conv2")
    pairs += _module_pairs(dec.conv_in, "decoder.conv_in", "decoder.conv1")
    for k, m in enumerate(dec.mid):
        pairs += _module_pairs(m, f"decoder.mid.{k}", f"decoder.middle.{k}")
    seq = []
    for i, level in enumerate(dec.levels):
        seq += [(f"decoder.levels.{i}.{j}", m) for j, m in enumerate(level)]
        if i < len(dec.upsamples):
            seq.append((f"decoder.upsamples.{i}", dec.upsamples[i]))
    for k, (name, m) in enumerate(seq):
        pairs += _module_pairs(m, name, f"decoder.upsamples.{k}")
    pairs += _module_pairs(dec.norm_out, "decoder.norm_out", "decoder.head.0")
    pairs += _module_pairs(dec.conv_out, "decoder.conv_out", "decoder.head.2")
    return dict(pairs)


def check_convertible(config: IVVAEConfig) -> None:
    if (config.channel_multipliers[0] != 1 or not config.attention or config.temporal_compression != 4
            or not config.keyframe_compression):
        raise ReferenceCheckpointError(
            f"config {config.name!r} has no reference layout: the reference code needs channel_multipliers[0] == 1, "
            "attention and keyframe compression on, and temporal_compression 4")


def from_reference_state_dict(state: dict[str, torch.Tensor], config: IVVAEConfig) -> IVVAE:
    """An ``IVVAE`` of ``config`` (eval mode) holding the tensors of a reference-layout ``state`` (strict: every
    tensor used, every shape matched)."""
    check_convertible(config)
    with torch.device("meta"):  # no memory and no init: every tensor comes from ``state``
        model = IVVAE(config)
    target = model.state_dict()
    mapping = key_map(model)
    missing = sorted(r for r in mapping.values() if r not in state)
    unexpected = sorted(set(state) - set(mapping.values()))
    if missing or unexpected:
        raise ReferenceCheckpointError(f"reference checkpoint does not match config {config.name!r}: "
                                       f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} "
                                       f"({len(unexpected)})")
    converted = {}
    for mine, ref in mapping.items():
        tensor, want = state[ref], target[mine]
        if tensor.numel() != want.numel() or (tensor.ndim == want.ndim and tensor.shape != want.shape):
            raise ReferenceCheckpointError(f"{ref}: shape {tuple(tensor.shape)}, config {config.name!r} needs "
                                           f"{tuple(want.shape)} (as {mine})")
        converted[mine] = tensor.detach().to(torch.float32).reshape(want.shape).contiguous()
    if model.padding_token is not None:
        converted["padding_token"] = torch.zeros(config.latent_channels)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()


def convert_reference_checkpoint(path: str | Path, config: IVVAEConfig, out_dir: str | Path) -> Path:
    """Read a published ``.pth`` (``torch.load(weights_only=True)``: tensors only, no code is unpickled) and write
    it as a weights folder (``config.json`` + ``model.safetensors`` + model card) to ``out_dir``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as e:  # the last: non-tensor content
        raise ReferenceCheckpointError(f"{path}: not a readable PyTorch state dict ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = from_reference_state_dict(state, config)
    card = (f"# {config.name} (converted)\n\nIV-VAE weights converted from `{path.name}` (reference layout of "
            "ali-vilab/iv-vae) by `pvvae_cli.models.ivvae.reference_keys`. Latent statistics: the config's "
            f"`latents_mean`/`latents_std`. Padding token: zero (not part of the published file).\n")
    return model.save_pretrained(out_dir, model_card=card)
