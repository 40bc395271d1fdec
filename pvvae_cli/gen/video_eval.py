"""FVD / KVD of ``gen`` samples during training: the ``EvalHook`` behind ``gen train --eval-reference DIR``.

At every evaluation the model samples a fixed-seed batch (classes in turn for a conditional model), the VAE the
model records decodes it to pixels, and the feature network (the Kinetics-400 I3D from ``pvvae_cli.metrics``, or any
``FeatureExtractor``) scores it against held-out real clips, whose features are computed once. The protocol is
``eval.sets``': each reference clip's first ``frames`` frames at native size (the I3D resizes to 224x224), the
samples' frames as decoded, both ``(3, T, H, W)`` in [-1, 1]. Few samples make FVD strongly biased (the paper
uses 2048): compare only curves of one protocol and sample count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.gen.evaluation import EvalHook
from pvvae_cli.gen.model import LatteDiT


class GenEvalError(PvvaeError, ValueError):
    """An evaluation that cannot run; the message names the input and the fix."""


def decode_latents(vae, z: torch.Tensor, normalized: bool) -> torch.Tensor:
    """Latents ``(B, C, t, h, w)`` as latent files store them -> pixels ``(B, 3, T, H, W)`` float32 in [-1, 1]
    (clamped). ``normalized``: the files hold VAE-normalised latents (undone first)."""
    with torch.no_grad():
        if normalized:
            z = vae.denormalize_latents(z)
        return vae.decode(z).float().clamp(-1, 1)


def fvd_hook(vae, reference: Sequence[str | Path], features, frames: int, num: int = 16, steps: int = 25,
             seed: int = 0, cfg_scale: float = 1.0, batch_size: int = 4) -> EvalHook:
    """An ``EvalHook`` logging ``fvd``, ``kvd`` and ``kvd_std`` of ``num`` samples against the first ``frames``
    frames (the samples' length) of the clips of ``reference`` (files or folders). The reference features are
    extracted here, once, so a bad reference fails before training starts (``GenEvalError``: fewer than 2 usable
    clips)."""
    from pvvae_cli.eval.protocol import ClipSkipped, load_clip
    from pvvae_cli.gen.generate import sample_latents
    from pvvae_cli.media.discovery import collect_videos
    from pvvae_cli.metrics.fvd import extract_features, fvd_from_features, kernel_distance

    def clips():  # streamed: only a batch of reference clips is in memory at a time
        for p in collect_videos(list(reference)):
            try:
                yield load_clip(p, frames, None)
            except ClipSkipped:
                continue

    try:
        ref = extract_features(features, clips(), batch_size=batch_size)
    except ValueError:
        ref = None
    if ref is None or ref.shape[0] < 2:
        raise GenEvalError(f"--eval-reference: fewer than 2 usable clips of >= {frames} frames among "
                           f"{', '.join(str(r) for r in reference)}; FVD needs at least 2")

    def hook(model: LatteDiT, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        z, _ = sample_latents(model, num, None, cfg_scale, steps, seed)
        vae.to(device)
        pixels = [decode_latents(vae, z[i : i + batch_size].to(device), model.config.vae_normalized).cpu()
                  for i in range(0, num, batch_size)]
        gen = extract_features(features, pixels, batch_size=batch_size)
        kvd, kvd_std = kernel_distance(ref, gen)
        return {"fvd": fvd_from_features(ref, gen), "kvd": kvd, "kvd_std": kvd_std}

    return hook
