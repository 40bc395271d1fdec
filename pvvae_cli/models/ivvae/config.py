"""``IVVAEConfig``: the frozen architecture description of an IV-VAE, and its presets registry.

Every field name is a permanent ``config.json`` key. Widths are *per half*: every feature tensor holds a keyframe
(2-D) half and a motion (3-D) half of ``base_channels * multiplier`` channels each (the reference code's ``dim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pvvae_cli.config_io import FrozenConfig, check_latent_stats
from pvvae_cli.models.pvvae.config import PADDING_MODES


def _is_pow2(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class IVVAEConfig(FrozenConfig):
    """Architecture of an IV-VAE.

    The encoder has ``log2(spatial_compression)`` downsampling stages; as in the reference code the *last*
    ``log2(temporal_compression)`` of them also halve time (spatial-only stages first), and the decoder mirrors
    it (temporal upsampling first). A level whose frames each stand for a whole latent frame (the deepest level,
    the middle blocks) is 2-D only; the others use GCConv with groups of ``temporal_compression / 2**d`` frames
    after ``d`` temporal downsamplings (4, then 2 for t4). ``channel_multipliers`` gives each level's width (one
    more entry than stages). ``attention``: the reference's frame attention (after each deepest-level residual
    block, after the last downsampling, in the middle blocks). ``keyframe_compression=False`` is the ablation "GCConv
    without KTC": the same network with one feature stream of the same total width (GCConv in place of every KTC
    conv, norms and attention over all channels, stride-2 temporal convs on every channel, no keyframe output).
    """

    in_channels: int = 3
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    layers_per_block: int = 2
    attention: bool = True
    keyframe_compression: bool = True  # KTC; False: the ablation with plain GCConv features (no 2-D/3-D halves)
    latent_channels: int = 16  # [keyframe half | motion half]: must be even
    temporal_compression: int = 4
    spatial_compression: int = 8
    padding_mode: str = "learnable"  # how predictive training pads dropped latent frames
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("channel_multipliers", "latents_mean", "latents_std"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        for key in ("in_channels", "base_channels", "layers_per_block", "latent_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IVVAEConfig.{key} must be a positive integer, got {value!r}")
        if self.latent_channels % 2:
            raise ValueError(f"IVVAEConfig.latent_channels must be even (a keyframe and a motion half), "
                             f"got {self.latent_channels}")
        for key in ("temporal_compression", "spatial_compression"):
            if not _is_pow2(getattr(self, key)):
                raise ValueError(f"IVVAEConfig.{key} must be a power of two, got {getattr(self, key)!r}")
        if self.temporal_compression < 2 or self.temporal_compression > self.spatial_compression:
            raise ValueError("IVVAEConfig.temporal_compression must be >= 2 (keyframe groups) and <= "
                             f"spatial_compression, got t{self.temporal_compression} s{self.spatial_compression}")
        want = self.num_stages + 1
        mults = self.channel_multipliers
        if len(mults) != want or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"IVVAEConfig.channel_multipliers must be {want} positive integers for "
                             f"spatial_compression={self.spatial_compression}, got {mults!r}")
        # Every decoder upsampling halves the width of each half (the reference's Resample): every upsampled width must
        # stay a whole number.
        if any((self.base_channels * m) % 2 for m in mults[1:]):
            raise ValueError(f"IVVAEConfig.base_channels * channel_multipliers[1:] must be even, got "
                             f"{self.base_channels} x {mults[1:]}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"IVVAEConfig.padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        check_latent_stats(self)

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.spatial_compression))

    @property
    def num_temporal_stages(self) -> int:
        return int(math.log2(self.temporal_compression))

    def is_temporal_stage(self, i: int) -> bool:
        """Whether encoder stage ``i`` (0 = full resolution) also halves time: the last ``log2(tc)`` stages."""
        return i >= self.num_stages - self.num_temporal_stages

    def encoder_group(self, level: int) -> int:
        """GCConv group size (frames per latent frame) at encoder level ``level``; 1 means 2-D only."""
        halvings = sum(self.is_temporal_stage(i) for i in range(level))
        return self.temporal_compression >> halvings

    @property
    def widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_multipliers]

    @property
    def tag(self) -> str:
        return f"t{self.temporal_compression}s{self.spatial_compression}c{self.latent_channels}"





def published_stats(scale: float, shift: float, channels: int) -> dict[str, tuple[float, ...]]:
    """The reference's latent map ``scale * (z - shift)`` as per-channel statistics: mean ``shift``, std
    ``1 / scale`` (``normalize_latents`` computes ``(z - mean) / std``)."""
    return {"latents_mean": (shift,) * channels, "latents_std": (1.0 / scale,) * channels}


# The presets registry: name -> config (names unique across families: the CLI's --preset choices).
PRESETS: dict[str, IVVAEConfig] = {
    # For tests and smoke runs: t4s16 like PV-VAE's `tiny` (same latent shapes), well under 1 M parameters.
    "ivvae-tiny": IVVAEConfig(base_channels=6, channel_multipliers=(1, 2, 2, 2, 2), layers_per_block=1,
                              latent_channels=8, spatial_compression=16, name="ivvae-tiny"),
    # t4s16c32 like PV-VAE's `small`, for comparisons at equal latent size.
    "ivvae-small": IVVAEConfig(base_channels=24, channel_multipliers=(1, 2, 4, 4, 4), layers_per_block=1,
                               latent_channels=32, spatial_compression=16, name="ivvae-small"),
    # The published ivvae_z16_dim64 shape (t4s8c16) with its latent scale/shift; random weights here (convert the
    # published file with reference_keys).
    "ivvae-z16": IVVAEConfig(base_channels=64, channel_multipliers=(1, 2, 4, 4), layers_per_block=2,
                             latent_channels=16, spatial_compression=8, name="ivvae-z16",
                             **published_stats(0.9697, -0.1553, 16)),
}
