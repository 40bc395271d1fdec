"""``GenConfig``: the frozen description of a latent video diffusion transformer, and its presets registry.

Everything needed to use a set of ``gen`` weights lives here and so in its ``config.json``: the architecture, the
latent shape and channels it was trained on, the per-channel latent normalisation computed over the training set,
the number of classes, and the VAE whose latents it models (how it was named, its config hash, its tag) with the
clip geometry needed to decode samples. Training settings (steps, lr, ...) are ``GenTrainConfig``'s. Every field
name is a permanent ``config.json`` key.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvvae_cli.config_io import FrozenConfig


@dataclass(frozen=True)
class GenConfig(FrozenConfig):
    """A Latte-style transformer over latents ``(C, t, h, w)``: ``depth`` blocks alternating spatial attention
    (over the ``(h/p)*(w/p)`` tokens of each latent frame) and temporal attention (over the ``t`` tokens of each
    position), adaLN-Zero conditioned on the flow time and an optional class label."""

    # architecture
    hidden_size: int = 384
    depth: int = 12  # even: spatial and temporal blocks alternate
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 1  # spatial only; 1 for t4s16 latents (the paper drops patchify downsampling)
    num_classes: int = 0  # 0 = unconditional; otherwise labels 0..num_classes-1 and a null class num_classes
    # the latents it models (filled in from the training set)
    latent_channels: int = 4
    latent_frames: int = 1
    latent_height: int = 1
    latent_width: int = 1
    latents_mean: tuple[float, ...] | None = None  # per-channel statistics over the training set: the model
    latents_std: tuple[float, ...] | None = None  # works on (z - mean) / std
    class_names: tuple[str, ...] = ()  # label -> name, when the labels came with names
    # the VAE that made (and decodes) the latents, as recorded in the latent files
    vae: str = ""  # weights folder, hub repo id or preset:NAME
    vae_config_hash: str = ""
    vae_tag: str = ""
    vae_normalized: bool = False  # whether the files hold VAE-normalised latents (decoding undoes it)
    fps: float = 0.0
    encoded_frames: int = 0  # the pixel clip geometry of the latents (1 + tc*(t-1) frames, H, W)
    encoded_height: int = 0
    encoded_width: int = 0
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("latents_mean", "latents_std", "class_names"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        for key in ("hidden_size", "depth", "num_heads", "patch_size", "latent_channels", "latent_frames",
                    "latent_height", "latent_width"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GenConfig.{key} must be a positive integer, got {value!r}")
        if self.depth % 2:
            raise ValueError(f"GenConfig.depth must be even (spatial and temporal blocks alternate), got {self.depth}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"GenConfig.hidden_size {self.hidden_size} must be a multiple of num_heads "
                             f"{self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("GenConfig: the head width hidden_size / num_heads must be even")
        # the 2-D sin-cos embedding splits the width into 4 quarters (sin/cos of rows and of columns)
        if self.hidden_size % 4:
            raise ValueError(f"GenConfig.hidden_size must be a multiple of 4, got {self.hidden_size}")
        if self.num_classes < 0:
            raise ValueError(f"GenConfig.num_classes must be >= 0, got {self.num_classes}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"GenConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.latent_height % self.patch_size or self.latent_width % self.patch_size:
            raise ValueError(f"GenConfig: latent size {self.latent_height}x{self.latent_width} is not a multiple of "
                             f"patch_size {self.patch_size}")
        for key in ("latents_mean", "latents_std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.latent_channels:
                raise ValueError(f"GenConfig.{key} must have latent_channels={self.latent_channels} entries, "
                                 f"got {len(value)}")
        if (self.latents_mean is None) != (self.latents_std is None):
            raise ValueError("GenConfig.latents_mean and latents_std must be given together")
        if self.latents_std is not None and any(s <= 0 for s in self.latents_std):
            raise ValueError("GenConfig.latents_std entries must be > 0")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"GenConfig.class_names has {len(self.class_names)} names for {self.num_classes} "
                             "classes")

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(C, t, h, w)`` of one latent clip."""
        return self.latent_channels, self.latent_frames, self.latent_height, self.latent_width

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0





# The presets registry: name -> architecture (the latent fields are filled in from the data). Latte's sizes
# (Ma et al. 2024, Table 1; the same as DiT's), plus `tiny` for tests. Also the CLI's choices for --preset.
PRESETS: dict[str, GenConfig] = {
    "tiny": GenConfig(hidden_size=64, depth=4, num_heads=4, name="tiny"),
    "S": GenConfig(hidden_size=384, depth=12, num_heads=6, name="S"),
    "B": GenConfig(hidden_size=768, depth=12, num_heads=12, name="B"),
    "L": GenConfig(hidden_size=1024, depth=24, num_heads=16, name="L"),
    "XL": GenConfig(hidden_size=1152, depth=28, num_heads=16, name="XL"),
}


def get_preset(name: str) -> GenConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown gen preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
