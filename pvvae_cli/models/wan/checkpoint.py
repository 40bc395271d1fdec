"""Wan VAE weights in the formats they are published in, read through explicit, strict key maps.

- a diffusers ``AutoencoderKLWan`` folder: ``config.json`` (``_class_name: AutoencoderKLWan``) +
  ``diffusion_pytorch_model.safetensors`` (possibly the ``vae/`` subfolder of a pipeline; ``weights`` finds it).
  Its keys are ``WanVAE``'s own, so the map is the identity, checked both ways;
- the original Wan checkpoint, ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``: a plain state dict, read with
  ``torch.load(weights_only=True)`` (never unpickling code), or the same keys in a ``.safetensors`` file. Its keys
  (``encoder.conv1``, ``encoder.downsamples.N.residual.2``, ``decoder.upsamples.N``, ``conv1`` for the quant conv,
  ...) are mapped by ``original_key_map``, generated from the architecture; the architecture (2.1 or 2.2) is read
  from the first conv's shape and must then match every tensor.

Any missing, unexpected or mis-shaped tensor is a ``WeightsError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pvvae_cli.models.wan.config import PRESETS, WanVAEConfig
from pvvae_cli.models.weights import WeightsError, check_tensors, read_safetensors

DIFFUSERS_CLASS = "AutoencoderKLWan"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"

# diffusers config keys that describe the architecture we build, and those that only carry metadata.
_DIFFUSERS_IGNORED = {"dropout", "scale_factor_temporal", "scale_factor_spatial", "clip_output"}


def config_from_diffusers(raw: dict[str, Any], source: Path) -> WanVAEConfig:
    """``WanVAEConfig`` of a diffusers ``AutoencoderKLWan`` ``config.json`` (already parsed; ``source`` names it in
    errors). Settings this implementation does not have (attention outside the middle block, dropout) are errors,
    not silently dropped."""
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    known = {"base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales",
             "temperal_downsample", "latents_mean", "latents_std", "is_residual", "in_channels", "out_channels",
             "patch_size"} | _DIFFUSERS_IGNORED
    unknown = sorted(set(raw) - known)
    if unknown:
        raise WeightsError(f"{source}: unknown AutoencoderKLWan settings {unknown}; this pvvae reads {sorted(known)}")
    if raw.get("attn_scales"):
        raise WeightsError(f"{source}: attn_scales={raw['attn_scales']} is not supported (Wan's VAEs have none)")
    if raw.get("dropout", 0.0):
        raise WeightsError(f"{source}: dropout={raw['dropout']} is not supported (Wan's VAEs use 0)")
    patch = raw.get("patch_size") or 1
    try:
        config = WanVAEConfig(
            base_channels=raw.get("base_dim", 96), decoder_base_channels=raw.get("decoder_base_dim"),
            channel_multipliers=tuple(raw.get("dim_mult", (1, 2, 4, 4))),
            layers_per_block=raw.get("num_res_blocks", 2),
            temporal_downsample=tuple(raw.get("temperal_downsample", (False, True, True))),
            latent_channels=raw.get("z_dim", 16), residual=bool(raw.get("is_residual", False)), patch_size=patch,
            latents_mean=raw.get("latents_mean"), latents_std=raw.get("latents_std"),
        )
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: invalid AutoencoderKLWan config: {e}") from e
    for key in ("in_channels", "out_channels"):
        if raw.get(key, 3) != 3 * patch * patch:
            raise WeightsError(f"{source}: {key}={raw.get(key, 3)} with patch_size={patch}; only RGB video "
                               f"({3 * patch * patch} channels after patchify) is supported")
    for key, derived in (("scale_factor_temporal", config.temporal_compression),
                         ("scale_factor_spatial", config.spatial_compression)):
        if raw.get(key) not in (None, derived):
            raise WeightsError(f"{source}: {key}={raw[key]} contradicts the architecture ({derived})")
    return config.replace(name=_preset_name(config))


def _preset_name(config: WanVAEConfig) -> str:
    """The preset whose architecture and statistics ``config`` has (names its learning-rate default), else
    ``custom``."""
    for name, preset in PRESETS.items():
        if preset.replace(name="custom") == config.replace(name="custom"):
            return name
    return "custom"


def is_diffusers_folder(directory: Path) -> bool:
    path = directory / "config.json"
    try:
        return path.is_file() and json.loads(path.read_text()).get("_class_name") == DIFFUSERS_CLASS
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_diffusers_folder(directory: Path, device: str | torch.device = "cpu"):
    """A ``WanVAE`` (eval mode, fp32) from a diffusers ``AutoencoderKLWan`` folder."""
    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{config_path}: not readable JSON ({e})") from e
    if not isinstance(raw, dict) or raw.get("_class_name") != DIFFUSERS_CLASS:
        raise WeightsError(f"{config_path}: not a diffusers {DIFFUSERS_CLASS} config")
    config = config_from_diffusers(raw, config_path)
    weights_path = directory / DIFFUSERS_WEIGHTS
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path}: missing (sharded or .bin diffusers weights are not supported; "
                           f"re-save with safe_serialization=True)")
    return _build(config, read_safetensors(weights_path, device), weights_path)


def load_checkpoint_file(path: Path, device: str | torch.device = "cpu"):
    """A ``WanVAE`` from one file of Wan weights: the original layout (``.pth`` plain state dict or
    ``.safetensors``) or diffusers' keys in a ``.safetensors``. The architecture is inferred from the tensors."""
    if path.suffix == ".safetensors":
        tensors = read_safetensors(path, device)
    else:
        try:
            tensors = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and containers: say so, in one line
            raise WeightsError(f"{path}: not a plain PyTorch state dict loadable with weights_only=True "
                               f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(tensors, dict) or not tensors or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise WeightsError(f"{path}: expected a flat state dict (name -> tensor) of a Wan VAE")
    first = tensors.get("encoder.conv_in.weight", tensors.get("encoder.conv1.weight"))
    if first is None or first.ndim != 5:
        raise WeightsError(f"{path}: no encoder.conv1.weight / encoder.conv_in.weight: not a Wan VAE checkpoint")
    config = PRESETS["wan2.2"] if first.shape[1] == 12 else PRESETS["wan2.1"]
    return _build(config, tensors, path, original_key_map(config) if "encoder.conv1.weight" in tensors else None)


def _build(config: WanVAEConfig, tensors: dict[str, torch.Tensor], source: Path,
           key_map: dict[str, str] | None = None):
    """The model of ``config`` holding ``tensors`` (keys renamed by ``key_map``, file key -> model key), after
    checking that they are exactly the model's, by name and shape."""
    from pvvae_cli.models.wan.model import WanVAE

    with torch.device("meta"):  # no memory and no init: every tensor comes from the file
        model = WanVAE(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if key_map is not None:
        expected = {file_key: expected[model_key] for file_key, model_key in key_map.items()}
    check_tensors(source, expected, tensors)
    if key_map is not None:
        tensors = {key_map[k]: v for k, v in tensors.items()}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------- the original Wan layout
_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
           "conv_shortcut": "shortcut"}
_MID = {("resnets", "0"): "middle.0", ("attentions", "0"): "middle.1", ("resnets", "1"): "middle.2"}
_TOP = {"quant_conv": "conv1", "post_quant_conv": "conv2"}
_ENDS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}


def original_key_map(config: WanVAEConfig) -> dict[str, str]:
    """original Wan key -> ``WanVAE`` key, for every tensor of ``config``'s model (``padding_token`` excluded:
    Wan has none)."""
    from pvvae_cli.models.wan.model import WanVAE

    with torch.device("meta"):
        keys = WanVAE(config.replace(padding_mode="gaussian")).state_dict().keys()
    return {_to_original(k, config): k for k in keys}


def _to_original(key: str, cfg: WanVAEConfig) -> str:
    parts = key.split(".")
    if parts[0] in _TOP:
        return ".".join([_TOP[parts[0]], *parts[1:]])
    side, name, rest = parts[0], parts[1], parts[2:]
    if name in _ENDS:
        return ".".join([side, _ENDS[name], *rest])
    if name == "mid_block":
        return ".".join([side, _MID[(rest[0], rest[1])], *_resnet_tail(rest[2:])])
    level = int(rest[0])
    blocks = cfg.layers_per_block + (1 if side == "decoder" else 0)  # residual blocks per level
    if side == "encoder" and not cfg.residual:  # flat list, same indices
        return ".".join([side, "downsamples", rest[0], *_resnet_tail(rest[1:])])
    group, sub = rest[1], rest[2:]  # resnets.J..., or downsampler / upsampler / upsamplers.0
    if group == "resnets":
        index, tail = int(sub[0]), _resnet_tail(sub[1:])
    else:
        index, tail = blocks, (sub[1:] if group == "upsamplers" else sub)
    if not cfg.residual:  # Wan2.1 decoder: one flat list of (blocks + 1 resample) modules per level
        return ".".join([side, "upsamples", str(level * (blocks + 1) + index), *tail])
    inner = "downsamples" if side == "encoder" else "upsamples"
    return ".".join([side, inner, str(level), inner, str(index), *tail])


def _resnet_tail(rest: list[str]) -> list[str]:
    """Inside a residual block: ``norm1.gamma`` -> ``residual.0.gamma`` etc.; other names unchanged."""
    if rest and rest[0] in _RESNET:
        return [*_RESNET[rest[0]].split("."), *rest[1:]]
    return rest


def load_foreign(path: Path, device: str | torch.device = "cpu"):
    """``Family.foreign`` for Wan: a diffusers folder or a single checkpoint file."""
    path = Path(path)
    if path.is_file():
        return load_checkpoint_file(path, device)
    return load_diffusers_folder(path, device)
