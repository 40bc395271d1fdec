"""``gen sample`` as a library function: sample latents from a ``gen`` model, write them as latent files, decode
them with the VAE the model records, and write mp4s plus a contact sheet of their first frames.

Outputs in ``out_dir``: ``sample_NNNN.safetensors`` (the latent format of ``pvvae encode``, so ``pvvae decode``
reads them too), ``sample_NNNN.mp4``, ``contact_sheet.png`` (first frames, rows of up to 8) and ``samples.jsonl``
(one line per sample: its files, class id and name, seed, guidance scale and steps). Every file is written
atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pvvae_cli import __version__
from pvvae_cli.codec.latents import LatentMeta, config_hash, save_latent
from pvvae_cli.errors import PvvaeError
from pvvae_cli.gen.config import GenConfig
from pvvae_cli.gen.data import denormalize
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.sampler import euler_sample, initial_noise
from pvvae_cli.media.writer import write_video
from pvvae_cli.runtime.atomic import atomic_path
from pvvae_cli.runtime.device import autocast


class GenSampleError(PvvaeError, ValueError):
    """A sampling request that cannot be met; the message names the value and the fix."""


@dataclass
class GenSamples:
    latents: torch.Tensor  # (N, C, t, h, w) float32 as latent files store them
    labels: list[int | None]
    latent_files: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    contact_sheet: Path | None = None


def resolve_class(config: GenConfig, cls: str | None) -> int | None:
    """``--class`` as a class id: an index ``0..K-1`` or one of the model's class names."""
    if cls is None:
        return None
    if not config.conditional:
        raise GenSampleError(f"--class {cls}: this model is unconditional (trained without labels)")
    if cls in config.class_names:
        return config.class_names.index(cls)
    try:
        idx = int(cls)
    except ValueError:
        idx = -1
    if not 0 <= idx < config.num_classes:
        names = f" or one of {', '.join(config.class_names)}" if config.class_names else ""
        raise GenSampleError(f"--class {cls}: expected a class id 0..{config.num_classes - 1}{names}")
    return idx


def sample_latents(model: LatteDiT, num: int, cls: int | None = None, cfg_scale: float = 1.0, steps: int = 100,
                   seed: int = 0, dtype: torch.dtype = torch.float32, shift: float = 1.0
                   ) -> tuple[torch.Tensor, list[int | None]]:
    """``num`` latents ``(num, C, t, h, w)`` float32 on the CPU, de-normalised (as latent files store them), and
    the class of each: ``cls``, or for a conditional model without ``cls`` the classes in turn ``0, 1, ..``.
    Same seed, same samples."""
    cfg = model.config
    device = next(model.parameters()).device
    noise = initial_noise((num, *cfg.latent_shape), seed)
    labels: list[int | None]
    if cfg.conditional:
        labels = [cls if cls is not None else i % cfg.num_classes for i in range(num)]
        y = torch.tensor(labels, device=device)
    else:
        labels, y = [None] * num, None
    with autocast(device, dtype):
        z = euler_sample(model, noise.to(device), steps, y, cfg_scale, model.null_class, shift)
    return denormalize(z.cpu(), cfg), labels


def sample_meta(config: GenConfig, index: int) -> LatentMeta:
    """The latent-file metadata of a sample: the recorded VAE and clip geometry, nothing to undo."""
    return LatentMeta(
        model=config.vae, config_hash=config.vae_config_hash, latent_channels=config.latent_channels,
        model_tag=config.vae_tag, normalized=config.vae_normalized, posterior="generated",
        source=f"sample_{index:04d}", fps=config.fps, num_frames=config.encoded_frames,
        height=config.encoded_height, width=config.encoded_width, encoded_frames=config.encoded_frames,
        encoded_height=config.encoded_height, encoded_width=config.encoded_width, pvvae_version=__version__)


def generate(model: LatteDiT, out_dir: str | Path, num: int, cls: str | None = None, cfg_scale: float = 1.0,
             steps: int = 100, seed: int = 0, dtype: torch.dtype = torch.float32, vae_spec: str | None = None,
             decode: bool = True) -> GenSamples:
    """Sample ``num`` clips and write them to ``out_dir`` (see the module docstring). The VAE is ``vae_spec`` or
    the one the model records; it must have the recorded config hash (else ``GenSampleError`` before any
    sampling)."""
    from pvvae_cli.codec.pipeline import Codec
    from pvvae_cli.models.registry import load_model

    if num < 1 or steps < 1:
        raise GenSampleError(f"--num and --steps must be >= 1, got {num} and {steps}")
    cfg = model.config
    label = resolve_class(cfg, cls)
    device = next(model.parameters()).device
    codec = None
    if decode:
        spec = vae_spec or cfg.vae
        if not spec:
            raise GenSampleError("the model records no VAE; pass --vae WEIGHTS to decode (or --no-decode)")
        vae = load_model(spec, device=device)
        if config_hash(vae.config) != cfg.vae_config_hash:
            raise GenSampleError(f"VAE {spec} has config hash {config_hash(vae.config)}, but the model was trained on "
                                 f"latents of {cfg.vae} ({cfg.vae_config_hash}); pass --vae with that VAE")
        codec = Codec(vae, spec, device, dtype)
    z, labels = sample_latents(model, num, label, cfg_scale, steps, seed, dtype)
    out_dir = Path(out_dir)
    out = GenSamples(z, labels)
    firsts = []
    for i in range(num):
        meta = sample_meta(cfg, i)
        out.latent_files.append(save_latent(out_dir / f"sample_{i:04d}.safetensors", z[i], meta))
        if codec is not None:
            path = out_dir / f"sample_{i:04d}.mp4"
            frames = np.concatenate(list(codec.decode_frames(z[i], meta)))  # (T, H, W, 3) uint8
            write_video(path, frames, cfg.fps if cfg.fps > 0 else 8.0)
            out.videos.append(path)
            firsts.append(frames[0])
    if firsts:
        out.contact_sheet = write_contact_sheet(out_dir / "contact_sheet.png", firsts)
    lines = []
    for i, y in enumerate(labels):
        lines.append(json.dumps({
            "latent": out.latent_files[i].name, "video": out.videos[i].name if out.videos else None, "class": y,
            "class_name": cfg.class_names[y] if y is not None and cfg.class_names else None, "seed": seed,
            "index": i, "cfg_scale": cfg_scale, "steps": steps}))
    with atomic_path(out_dir / "samples.jsonl") as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return out


def write_contact_sheet(path: Path, frames: list[np.ndarray], per_row: int = 8) -> Path:
    """A grid of uint8 ``(H, W, 3)`` frames (``per_row`` per row, black filling the last row), as one PNG."""
    h, w, _ = frames[0].shape
    rows = -(-len(frames) // per_row)
    cols = min(per_row, len(frames))
    sheet = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, per_row)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = f
    write_video(path, sheet[None], fps=1.0)  # one frame to a .png: an image, written atomically
    return path
