"""A tiny synthetic latent set for the gen tests: two classes of a bright blob moving right or left."""

from __future__ import annotations

from pathlib import Path

import torch

SHAPE = (8, 3, 4, 6)  # (C, t, h, w) of preset:tiny's latents for 9 frames of 64x96 pixels (non-square)


def moving_blob(direction: int, row: int, col: int, shape=SHAPE, noise: float = 0.1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``(C, t, h, w)``: small noise plus a +2 blob in channels 0-3 (-2 in 4-7) at ``(row, col + direction*i)`` in
    latent frame ``i`` (wrapping around)."""
    c, t, h, w = shape
    z = torch.randn(shape, generator=generator) * noise
    for i in range(t):
        z[:4, i, row % h, (col + direction * i) % w] += 2.0
        z[4:, i, row % h, (col + direction * i) % w] -= 2.0
    return z


def write_latent_set(root: Path, per_class: int = 4, seed: int = 0, folders: bool = True) -> list[Path]:
    """``per_class`` clips of each class as latent files under ``root/right`` and ``root/left`` (or flat), with the
    metadata ``pvvae encode --model preset:tiny`` would write (so ``gen sample`` can decode them)."""
    from pvvae_cli.codec.latents import LatentMeta, config_hash, save_latent
    from pvvae_cli.models.registry import get_preset

    vae_cfg = get_preset("tiny")
    c, t, h, w = SHAPE
    meta = LatentMeta(model="preset:tiny", config_hash=config_hash(vae_cfg), latent_channels=c,
                      model_tag=vae_cfg.tag, normalized=False, posterior="mode", source="", fps=8.0,
                      num_frames=1 + 4 * (t - 1), height=16 * h, width=16 * w, encoded_frames=1 + 4 * (t - 1),
                      encoded_height=16 * h, encoded_width=16 * w)
    g = torch.Generator().manual_seed(seed)
    files = []
    for name, direction in (("right", 1), ("left", -1)):
        for i in range(per_class):
            row, col = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
            z = moving_blob(direction, row, col, generator=g)
            rel = f"{name}/clip{i}.safetensors" if folders else f"{name}_clip{i}.safetensors"
            files.append(save_latent(root / rel, z, meta.replace(source=rel)))
    return files
