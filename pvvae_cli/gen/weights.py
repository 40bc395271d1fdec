"""The ``gen`` weights folder: ``config.json`` (``class_name = LatteDiT``, ``format_version`` and every
``GenConfig`` field) + ``model.safetensors`` + ``README.md`` model card. The same layout, errors and strictness as
the autoencoders' (``models/weights.py``), whose folder resolution (local folder or hub repo id) is reused; a
``gen`` model is not an autoencoder, so it is not in the autoencoder registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pvvae_cli import __version__
from pvvae_cli.gen.config import GenConfig
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.models.weights import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, WeightsError, resolve_weights_dir
from pvvae_cli.runtime.atomic import atomic_path

CLASS_NAME = "LatteDiT"  # permanent: written into config.json
FORMAT_VERSION = 1


def save_gen(model: LatteDiT, directory: str | Path, model_card: str | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed), each file atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "pvvae_format_version": str(FORMAT_VERSION)})
    config = {"class_name": CLASS_NAME, "format_version": FORMAT_VERSION, "pvvae_version": __version__,
              **model.config.to_dict()}
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    if model_card is not None:
        with atomic_path(directory / CARD_NAME) as tmp:
            tmp.write_text(model_card)
    return directory


def read_gen_config(path: Path) -> GenConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise WeightsError(f"{path}: missing; a gen weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or raw.pop("class_name", None) != CLASS_NAME:
        raise WeightsError(f"{path}: not a gen model (class_name must be {CLASS_NAME!r}); pvvae gen sample takes "
                           "a gen run folder or its weights/")
    version = raw.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path}: format_version {version!r} is not supported (this pvvae reads "
                           f"{FORMAT_VERSION}); upgrade pvvae")
    raw.pop("pvvae_version", None)
    try:
        return GenConfig.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{path}: invalid config: {e}") from e


def load_gen(name_or_path: str | Path, device: str | torch.device = "cpu") -> LatteDiT:
    """The ``LatteDiT`` of a weights folder, a hub repo id, or a run folder (its ``weights/``), in eval mode;
    strict about every tensor (safetensors only: nothing is unpickled)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / CONFIG_NAME).exists() and (path / "weights" / CONFIG_NAME).exists():
        path = path / "weights"  # a finished run folder
    directory = resolve_weights_dir(path if path.exists() else name_or_path)
    config = read_gen_config(directory / CONFIG_NAME)
    weights_path = directory / WEIGHTS_NAME
    try:
        tensors = load_file(weights_path, device=str(device))
    except FileNotFoundError as e:
        raise WeightsError(f"{weights_path}: missing; a weights folder needs {CONFIG_NAME} and {WEIGHTS_NAME}") from e
    except (SafetensorError, OSError, RuntimeError) as e:
        raise WeightsError(f"{weights_path}: not a readable safetensors file ({e})") from e
    with torch.device("meta"):  # no memory and no init: every tensor comes from the file
        model = LatteDiT(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k])
    if missing or unexpected or misshaped:
        raise WeightsError(f"{weights_path}: does not match its config.json (missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}, mis-shaped {misshaped[:5]})")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True, assign=True)
    return model.eval()
