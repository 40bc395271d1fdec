"""``gen sample`` as a library function: sample latents from a ``gen`` model, write them as latent files, decode
them with the VAE the model records, and write mp4s plus a contact sheet of their first frames.

Samples are drawn ``batch_size`` at a time (twice that through the model with classifier-free guidance), so
memory does not grow with ``num``; each sample's starting noise depends only on the seed and its index
(``sampler.initial_noise``), so the batch size does not change the samples.

Outputs in ``out_dir``: ``sample_NNNN.safetensors`` (the latent format of ``pvvae encode``, so ``pvvae decode``
reads them too), ``sample_NNNN.mp4``, ``contact_sheet.png`` (first frames, rows of up to 8) and ``samples.jsonl``
(one line per sample: its files, class id and name, seed, guidance scale and steps). Every file is written
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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

DEFAULT_BATCH_SIZE = 16  # clips sampled at once by gen sample


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


def sample_labels(config: GenConfig, num: int, cls: int | None = None) -> list[int | None]:
    """The class of each of ``num`` samples: ``cls``, or for a conditional model without ``cls`` the classes in turn
    ``0, 1, ..``; ``None`` for an unconditional model."""
    if not config.conditional:
        return [None] * num
    return [cls if cls is not None else i % config.num_classes for i in range(num)]


def iter_samples(model: LatteDiT, num: int, cls: int | None = None, cfg_scale: float = 1.0, steps: int = 100,
                 seed: int = 0, dtype: torch.dtype = torch.float32, shift: float = 1.0,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[int, torch.Tensor, list[int | None]]]:
    """``sample_latents`` a batch at a time: ``(start, latents, labels)`` for samples ``start ..``, latents float32
    ``(B, C, t, h, w)`` on the CPU as latent files store them, ``B <= batch_size``."""
    if batch_size < 1:
        raise GenSampleError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = model.config
    device = next(model.parameters()).device
    labels = sample_labels(cfg, num, cls)
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        noise = initial_noise((b, *cfg.latent_shape), seed, start)  # (B, C, t, h, w): sample start + i's own noise
        y = torch.tensor(labels[start:start + b], device=device) if cfg.conditional else None
        with autocast(device, dtype):
            z = euler_sample(model, noise.to(device), steps, y, cfg_scale, model.null_class, shift)
        yield start, denormalize(z.cpu(), cfg), labels[start:start + b]


def sample_latents(model: LatteDiT, num: int, cls: int | None = None, cfg_scale: float = 1.0, steps: int = 100,
                   seed: int = 0, dtype: torch.dtype = torch.float32, shift: float = 1.0,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[torch.Tensor, list[int | None]]:
    """``num`` latents ``(num, C, t, h, w)`` float32 on the CPU, de-normalised (as latent files store them), and
    the class of each (``sample_labels``). Same seed, same samples, whatever ``batch_size`` (the clips sampled at
    once)."""
    parts = [z for _, z, _ in iter_samples(model, num, cls, cfg_scale, steps, seed, dtype, shift, batch_size)]
    return torch.cat(parts), sample_labels(model.config, num, cls)


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
             decode: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> GenSamples:
    """Sample ``num`` clips, ``batch_size`` at a time, and write them to ``out_dir`` (see the module docstring); each
    batch is written and decoded before the next is sampled. The VAE is ``vae_spec`` or the one the model records;
    it must have the recorded config hash (else ``GenSampleError`` before any sampling)."""
    from pvvae_cli.codec.pipeline import Codec
    from pvvae_cli.models.registry import load_model

    if num < 1 or steps < 1 or batch_size < 1:
        raise GenSampleError(f"--num, --steps and --batch-size must be >= 1, got {num}, {steps} and {batch_size}")
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
    out_dir = Path(out_dir)
    parts, labels, firsts = [], sample_labels(cfg, num, label), []
    out = GenSamples(torch.empty(0), labels)
    for start, z, _ in iter_samples(model, num, label, cfg_scale, steps, seed, dtype, batch_size=batch_size):
        parts.append(z)
        for j in range(z.shape[0]):
            i = start + j
            meta = sample_meta(cfg, i)
            out.latent_files.append(save_latent(out_dir / f"sample_{i:04d}.safetensors", z[j], meta))
            if codec is not None:
                path = out_dir / f"sample_{i:04d}.mp4"
                frames = np.concatenate(list(codec.decode_frames(z[j], meta)))  # (T, H, W, 3) uint8
                write_video(path, frames, cfg.fps if cfg.fps > 0 else 8.0)
                out.videos.append(path)
                firsts.append(frames[0])
    out.latents = torch.cat(parts)
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
