"""pvvae: the Predictive Video VAE (PV-VAE) toolkit.

Library entry points: ``VideoVAE`` (the network) and ``VAEConfig`` (its architecture), with ``PRESETS``.
"""

__version__ = "0.1.0"

from pvvae_cli.models.pvvae.config import PRESETS, VAEConfig  # noqa: E402
from pvvae_cli.models.pvvae.model import VideoVAE  # noqa: E402

__all__ = ["PRESETS", "VAEConfig", "VideoVAE", "__version__"]
