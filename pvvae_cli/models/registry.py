"""The model registry: ``config.json``'s ``class_name`` -> the family's config class and model class, and
``load_model``, which turns a weights folder, a Hugging Face repo id or ``preset:NAME`` into a model.

Entries name their classes by import path and import them on first use. Reading the registry therefore costs no
torch import, and the weights format (``weights.py``) finds the class to build here instead of importing a model
module, while model modules import the weights format for ``from_pretrained``: no import cycle.

A new family (IV-VAE, Wan, ...) is one ``Family`` line below plus its room under ``models/``; its model class
implements ``protocol.VideoAutoencoder`` and its config class has ``to_dict``/``from_dict``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvvae_cli.errors import PvvaeError

if TYPE_CHECKING:
    import torch

    from pvvae_cli.models.protocol import AutoencoderConfig, VideoAutoencoder

PRESET_PREFIX = "preset:"


class ModelSpecError(PvvaeError, ValueError):
    """An unknown class name or preset; the message lists the known ones."""


@dataclass(frozen=True)
class Family:
    """One autoencoder family. ``class_name`` is permanent: it is written into every ``config.json``.
    The paths are ``module:attribute``; ``presets`` names the family's presets registry (name -> config)."""

    class_name: str
    config: str
    model: str
    presets: str | None = None
    # Weights published in another format: the diffusers ``_class_name`` of such folders, and a
    # ``load_foreign(path, device)`` that reads them (and single checkpoint files) into the model.
    diffusers_class: str | None = None
    foreign: str | None = None

    @property
    def config_class(self) -> type:
        return _resolve(self.config)

    @property
    def model_class(self) -> type:
        return _resolve(self.model)

    @property
    def foreign_loader(self) -> Any:
        """``load_foreign(path, device) -> model`` for weights in a foreign format (None if the family has none)."""
        return _resolve(self.foreign) if self.foreign else None

    def preset_configs(self) -> dict[str, Any]:
        return _resolve(self.presets) if self.presets else {}


FAMILIES: dict[str, Family] = {
    f.class_name: f
    for f in (
        Family("VideoVAE", "pvvae_cli.models.pvvae.config:VAEConfig", "pvvae_cli.models.pvvae.model:VideoVAE",
               "pvvae_cli.models.pvvae.config:PRESETS"),
        Family("IVVAE", "pvvae_cli.models.ivvae.config:IVVAEConfig", "pvvae_cli.models.ivvae.model:IVVAE",
               "pvvae_cli.models.ivvae.config:PRESETS"),
        Family("WanVAE", "pvvae_cli.models.wan.config:WanVAEConfig", "pvvae_cli.models.wan.model:WanVAE",
               "pvvae_cli.models.wan.config:PRESETS", diffusers_class="AutoencoderKLWan",
               foreign="pvvae_cli.models.wan.checkpoint:load_foreign"),
    )
}

# Weights folders from before the registry were all PV-VAE; a config.json without class_name is read as one.
DEFAULT_CLASS_NAME = "VideoVAE"


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_family(class_name: str) -> Family:
    if class_name not in FAMILIES:
        raise ModelSpecError(f"unknown model class {class_name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[class_name]


def family_of(obj: Any) -> Family:
    """The family of a model or config instance (or of a subclass of one), matched by import path along its class
    hierarchy, so nothing is imported to answer."""
    for cls in type(obj).__mro__:
        path = f"{cls.__module__}:{cls.__qualname__}"
        for family in FAMILIES.values():
            if path in (family.model, family.config):
                return family
    raise ModelSpecError(f"{type(obj).__qualname__} is not a registered model or config class; "
                         f"known classes: {sorted(FAMILIES)}")


def presets() -> dict[str, AutoencoderConfig]:
    """Every family's presets by name (names are unique across families)."""
    out: dict[str, Any] = {}
    for family in FAMILIES.values():
        for name, config in family.preset_configs().items():
            assert name not in out, f"preset {name!r} is defined by two families"
            out[name] = config
    return out


def get_preset(name: str) -> AutoencoderConfig:
    table = presets()
    if name not in table:
        raise ModelSpecError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return table[name]


def build_model(config: AutoencoderConfig) -> VideoAutoencoder:
    """A randomly initialised model of ``config``'s family (use ``torch.device("meta")`` to build without memory)."""
    return family_of(config).model_class(config)


def load_model(spec: str | Path, device: str | torch.device = "cpu", revision: str | None = None) -> VideoAutoencoder:
    """The model named by ``spec``, in eval mode on ``device``:

    - a weights folder (``config.json`` + ``model.safetensors``) or a Hugging Face repo id ``owner/name`` or
      ``owner/name@revision`` (or ``revision=``: a branch, tag or commit; cached, offline-capable, see
      ``models/hub.py``): strict loading, ``WeightsError`` for any problem;
    - a family's foreign format (``Family.foreign``): a diffusers folder (or a pipeline folder / repo with it in
      ``vae/``), e.g. ``AutoencoderKLWan``, or a single checkpoint file such as Wan's ``Wan2.1_VAE.pth``;
    - ``preset:NAME``: RANDOM weights of a preset, drawn from torch's global generator (seed it for
      reproducibility); for tests and benchmarks only.
    """
    text = str(spec)
    if text.startswith(PRESET_PREFIX):
        model = build_model(get_preset(text[len(PRESET_PREFIX) :]))
        return model.to(device).eval()
    from pvvae_cli.models.weights import load_pretrained

    return load_pretrained(spec, revision=revision, device=device)
