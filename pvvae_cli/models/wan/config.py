"""``WanVAEConfig``: the frozen architecture description of a Wan2.1 / Wan2.2 VAE, and its presets.

Every field name is a permanent ``config.json`` key (pvvae's weights-folder format; a diffusers ``config.json`` is
translated by ``checkpoint.config_from_diffusers``). Wan's stage order differs from PV-VAE's: its first
downsampling stage is spatial only and the temporal ones come after it (``temporal_downsample = (False, True,
True)``), while PV-VAE halves time in its first stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PADDING_MODES = ("learnable", "gaussian")

# Latent statistics published with the Wan weights (per channel; Wan normalises latents as (z - mean) / std).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


@dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of a Wan VAE.

    The encoder has ``len(channel_multipliers) - 1`` downsampling stages (each halves H and W; stage ``i`` also
    halves T when ``temporal_downsample[i]``), after a ``patch_size`` x ``patch_size`` space-to-channel patchify
    (Wan2.2: 2). ``residual`` selects Wan2.2's blocks (a parameter-free average-pool shortcut around each
    encoder stage and a duplication shortcut around each decoder stage); Wan2.1's decoder instead halves the
    channels in each upsampling convolution. The decoder's widths are ``decoder_base_channels`` (default: the
    encoder's) times the multipliers, mirrored.
    """

    base_channels: int = 96
    decoder_base_channels: int | None = None
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    layers_per_block: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latent_channels: int = 16
    residual: bool = False
    patch_size: int = 1
    in_channels: int = 3
    padding_mode: str = "gaussian"  # predictive fine-tuning pads dropped latent frames with this
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("channel_multipliers", "temporal_downsample", "latents_mean", "latents_std"):
            value = getattr(self, key)
            if isinstance(value, list):  # JSON gives lists; tuples keep configs hashable and comparable
                object.__setattr__(self, key, tuple(value))
        for key in ("base_channels", "layers_per_block", "latent_channels", "in_channels", "patch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"WanVAEConfig.{key} must be a positive integer, got {value!r}")
        dec = self.decoder_base_channels
        if dec is not None and (not isinstance(dec, int) or isinstance(dec, bool) or dec < 1):
            raise ValueError(f"WanVAEConfig.decoder_base_channels must be a positive integer or null, got {dec!r}")
        mults = self.channel_multipliers
        if len(mults) < 2 or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in mults):
            raise ValueError(f"WanVAEConfig.channel_multipliers must be >= 2 positive integers, got {mults!r}")
        if len(self.temporal_downsample) != len(mults) - 1 or any(
                not isinstance(t, bool) for t in self.temporal_downsample):
            raise ValueError(f"WanVAEConfig.temporal_downsample must be {len(mults) - 1} booleans (one per stage), "
                             f"got {self.temporal_downsample!r}")
        if not self.residual:
            # Wan2.1's decoder halves the channels in every upsampling conv and feeds that to the next level.
            widths = [self.decoder_width * m for m in (mults[-1], *mults[::-1])]
            if any(w % 2 for w in widths[1:-1]):
                raise ValueError(f"WanVAEConfig: the Wan2.1 decoder halves its widths {widths}; they must be even")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"WanVAEConfig.padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        for key in ("latents_mean", "latents_std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.latent_channels:
                raise ValueError(f"WanVAEConfig.{key} must have latent_channels={self.latent_channels} entries, "
                                 f"got {len(value)}")
        if self.latents_std is not None and any(s <= 0 for s in self.latents_std):
            raise ValueError("WanVAEConfig.latents_std entries must be > 0")
        if (self.latents_mean is None) != (self.latents_std is None):
            raise ValueError("WanVAEConfig.latents_mean and latents_std must be given together")

    @property
    def decoder_width(self) -> int:
        return self.decoder_base_channels or self.base_channels

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    @property
    def tag(self) -> str:
        return f"t{self.temporal_compression}s{self.spatial_compression}c{self.latent_channels}"

    def replace(self, **changes: Any) -> WanVAEConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("channel_multipliers", "temporal_downsample", "latents_mean", "latents_std"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WanVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown WanVAEConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, WanVAEConfig] = {
    # Wan2.1's VAE (t4s8c16, 127 M parameters), as shipped with Wan2.1 and Wan2.2-A14B.
    "wan2.1": WanVAEConfig(latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD, name="wan2.1"),
    # Wan2.2's VAE (t4s16c48, with Wan2.2-TI2V-5B): 2x2 patchify, residual stages, a wider decoder.
    "wan2.2": WanVAEConfig(base_channels=160, decoder_base_channels=256, latent_channels=48, residual=True,
                           patch_size=2, latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
                           name="wan2.2"),
}
