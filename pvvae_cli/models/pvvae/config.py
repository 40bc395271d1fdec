"""``VAEConfig``: the frozen architecture description of a PV-VAE, and the presets registry.

Only what determines the network (and how to read its latents) belongs here; training settings live in the
training config of a run. Every field name is a permanent ``config.json`` key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pvvae_cli.config_io import FrozenConfig, check_latent_stats

PADDING_MODES = ("learnable", "gaussian")


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class VAEConfig(FrozenConfig):
    """Architecture of a causal 3D video VAE.

    The encoder has ``log2(spatial_compression)`` downsampling stages; the first ``log2(temporal_compression)``
    of them halve time and space (spatio-temporal), the rest halve space only. The decoder mirrors it.
    ``channel_multipliers`` gives the width of each resolution level (one more entry than stages).
    """

    in_channels: int = 3
    base_channels: int = 32
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4, 4)
    layers_per_block: int = 1
    mid_attention: bool = True
    latent_channels: int = 64
    temporal_compression: int = 4
    spatial_compression: int = 16
    padding_mode: str = "learnable"  # how predictive training pads dropped latent frames
    # A linear block codec beside the network (models/block_shortcut.py): the encoder adds its code to the posterior
    # mean, the decoder adds its reconstruction to the pixels, and the network's own outputs start at zero, so the
    # model starts as that linear codec (as block PCA once fitted: train --shortcut-pca) and learns the rest.
    linear_shortcut: bool = False
    # > 0: the decoder's pixels pass through a residual post-filter of this width (models/pixel_refiner.py), with
    # refiner_blocks hidden layers; it starts as the identity.
    refiner_channels: int = 0
    refiner_blocks: int = 3
    latents_mean: tuple[float, ...] | None = None  # per-channel statistics for latent normalisation
    latents_std: tuple[float, ...] | None = None
    name: str = field(default="custom", compare=True)

    def __post_init__(self) -> None:
        # JSON gives lists; normalise to tuples so configs compare equal and stay hashable.
        for key in ("channel_multipliers", "latents_mean", "latents_std"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        positive = ("in_channels", "base_channels", "layers_per_block", "latent_channels", "refiner_blocks")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"VAEConfig.{key} must be a positive integer, got {value!r}")
        for key in ("temporal_compression", "spatial_compression"):
            value = getattr(self, key)
            if not isinstance(value, int) or not _is_pow2(value):
                raise ValueError(f"VAEConfig.{key} must be a power of two, got {value!r}")
        if self.temporal_compression > self.spatial_compression:
            raise ValueError(
                "VAEConfig.temporal_compression must not exceed spatial_compression "
                f"(every temporal stage is also spatial), got t{self.temporal_compression} s{self.spatial_compression}"
            )
        want = self.num_stages + 1
        mults = self.channel_multipliers
        if len(mults) != want or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(
                f"VAEConfig.channel_multipliers must be {want} positive integers for spatial_compression="
                f"{self.spatial_compression}, got {mults!r}"
            )
        if not isinstance(self.refiner_channels, int) or isinstance(self.refiner_channels, bool) \
                or self.refiner_channels < 0:
            raise ValueError(f"VAEConfig.refiner_channels must be an integer >= 0, got {self.refiner_channels!r}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"VAEConfig.padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        check_latent_stats(self)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # A key added after weights and latents were written is left out at its default, so config.json and the
        # config hash that latent files record (codec.latents.config_hash) stay what they were for those models.
        if not d["linear_shortcut"]:
            del d["linear_shortcut"]
        if not d["refiner_channels"]:
            del d["refiner_channels"], d["refiner_blocks"]
        return d

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.spatial_compression))

    @property
    def num_temporal_stages(self) -> int:
        return int(math.log2(self.temporal_compression))

    @property
    def tag(self) -> str:
        """Short compression tag as used in the literature, e.g. ``t4s16c64``."""
        return f"t{self.temporal_compression}s{self.spatial_compression}c{self.latent_channels}"





# The presets registry: name -> config. Also the CLI's choices for --preset.
PRESETS: dict[str, VAEConfig] = {
    # For tests and smoke runs: well under 1 M parameters.
    "tiny": VAEConfig(
        base_channels=8, channel_multipliers=(1, 2, 2, 2, 2), layers_per_block=1, latent_channels=8, name="tiny"
    ),
    # The CPU-trainable default: t4s16, 32 latent channels.
    "small": VAEConfig(
        base_channels=32, channel_multipliers=(1, 2, 4, 4, 4), layers_per_block=1, latent_channels=32, name="small"
    ),
    # The paper's t4s16c64 scale (661 M there; widths unpublished, this is our choice).
    "base": VAEConfig(
        base_channels=128, channel_multipliers=(1, 2, 4, 4, 4), layers_per_block=2, latent_channels=64, name="base"
    ),
    # t4s8 variant (the CogVideoX / Wan2.1 compression) of the small model, for comparisons.
    "small-t4s8": VAEConfig(
        base_channels=32, channel_multipliers=(1, 2, 4, 4), layers_per_block=1, latent_channels=16,
        spatial_compression=8, name="small-t4s8",
    ),
}


def get_preset(name: str) -> VAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
