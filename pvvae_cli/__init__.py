"""pvvae: the Predictive Video VAE (PV-VAE) toolkit.

Library entry points: ``load_model`` (a weights folder, a Hugging Face repo id or ``preset:NAME``), ``VideoVAE``
(the PV-VAE network) and ``VAEConfig`` (its architecture) with the ``PRESETS`` registry, ``DiagonalGaussian``
(what ``encode`` returns), ``VideoAutoencoder`` (the protocol every autoencoder family implements) and
``PvvaeError`` (the base of every user-facing error).

Everything but ``__version__`` is imported on first access (PEP 562), so ``import pvvae_cli`` and the CLI's
``--help``/``--version`` do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.11.0"

# name -> module that defines it, imported on first access.
_LAZY = {
    "PRESETS": "pvvae_cli.models.pvvae.config",
    "VAEConfig": "pvvae_cli.models.pvvae.config",
    "VideoVAE": "pvvae_cli.models.pvvae.model",
    "DiagonalGaussian": "pvvae_cli.models.posterior",
    "StreamState": "pvvae_cli.models.causal_conv",
    "VideoAutoencoder": "pvvae_cli.models.protocol",
    "AutoencoderConfig": "pvvae_cli.models.protocol",
    "load_model": "pvvae_cli.models.registry",
    "get_preset": "pvvae_cli.models.registry",
    "WeightsError": "pvvae_cli.models.weights",
    "PvvaeError": "pvvae_cli.errors",
}

__all__ = [
    "PRESETS", "AutoencoderConfig", "DiagonalGaussian", "PvvaeError", "StreamState", "VAEConfig", "VideoAutoencoder",
    "VideoVAE", "WeightsError", "__version__", "get_preset", "load_model",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ below does the imports
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.models.causal_conv import StreamState
    from pvvae_cli.models.posterior import DiagonalGaussian
    from pvvae_cli.models.protocol import AutoencoderConfig, VideoAutoencoder
    from pvvae_cli.models.pvvae.config import PRESETS, VAEConfig
    from pvvae_cli.models.pvvae.model import VideoVAE
    from pvvae_cli.models.registry import get_preset, load_model
    from pvvae_cli.models.weights import WeightsError


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pvvae_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # cache: later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
