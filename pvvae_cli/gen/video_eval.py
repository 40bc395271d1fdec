"""FVD / KVD of ``gen`` samples during training: the ``EvalHook`` behind ``gen train --eval-reference DIR``.

At every evaluation the model samples a fixed-seed batch (classes in turn for a conditional model), the VAE the
model records decodes it to pixels, and the feature network (the Kinetics-400 I3D from ``pvvae_cli.metrics``, or any
``FeatureExtractor``) scores it against held-out real clips, whose features are computed once. The protocol is
``eval.sets``': each reference clip's first ``frames`` frames at native size (the I3D resizes to 224x224), the
samples' frames as decoded, both ``(3, T, H, W)`` in [-1, 1]. Few samples make FVD strongly biased (the paper
uses 2048): compare only curves of one protocol and sample count. The feature network runs in float32 (outside the
trainer's autocast), on its own device.

``training_eval_hook`` is the whole evaluation of ``gen train`` (latent distances, plus FVD/KVD with a reference):
checked at once on every process, built at its first call, which only the main process makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.gen.evaluation import EvalHook, LazyHook
from pvvae_cli.gen.model import LatteDiT

if TYPE_CHECKING:
    from pvvae_cli.gen.train_config import GenTrainConfig


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
        with torch.autocast(device.type, enabled=False):  # I3D in float32, as for the reference features
            gen = extract_features(features, pixels, batch_size=batch_size)
        kvd, kvd_std = kernel_distance(ref, gen)
        return {"fvd": fvd_from_features(ref, gen), "kvd": kvd, "kvd_std": kvd_std}

    return hook


def vae_config_hash(spec: str) -> str:
    """The config hash (``codec.latents.config_hash``) of the VAE ``spec`` names, reading as little as possible: a
    preset's config or a weights folder's ``config.json``, without weights; other forms (a hub repo, a diffusers
    folder, a single checkpoint file) are loaded on the CPU."""
    from pvvae_cli.codec.latents import config_hash
    from pvvae_cli.models.registry import PRESET_PREFIX, get_preset, load_model
    from pvvae_cli.models.weights import CONFIG_NAME, WeightsError, read_config

    if spec.startswith(PRESET_PREFIX):
        return config_hash(get_preset(spec[len(PRESET_PREFIX):]))
    folder = Path(spec).expanduser()
    if (folder / CONFIG_NAME).is_file():
        try:
            return config_hash(read_config(folder / CONFIG_NAME))
        except WeightsError:
            pass  # not a pvvae config.json (e.g. a diffusers one): loading it decides
    return config_hash(load_model(spec).config)


def check_reference(reference: Sequence[str | Path], frames: int, need: int = 2) -> None:
    """Fail (``GenEvalError``; ``MediaNotFound``/``NoMediaFound`` for a missing input) unless ``reference`` holds at
    least ``need`` videos of ``frames`` frames or more. Reads headers only, and stops at the ``need``-th good one:
    cheap enough for every process of a run. (``fvd_hook`` reads the clips themselves.)"""
    from pvvae_cli.media.discovery import collect_videos
    from pvvae_cli.media.video_io import VideoReadError, probe

    found = 0
    for p in collect_videos(list(reference)):
        try:
            frames_there = probe(p).num_frames
        except VideoReadError:
            continue
        found += frames_there >= frames
        if found >= need:
            return
    raise GenEvalError(f"--eval-reference: fewer than {need} usable clips of >= {frames} frames among "
                       f"{', '.join(str(r) for r in reference)}; FVD needs at least 2")


def training_eval_hook(cfg: GenTrainConfig, num: int, steps: int, reference: Sequence[str | Path] | None = None,
                       i3d: str | Path | None = None) -> EvalHook:
    """The evaluation of ``gen train`` (every ``--eval-every`` steps): ``evaluation.sample_statistics`` of ``num``
    fixed-seed samples (``steps`` Euler steps) against the training latents, plus, with ``reference`` clips,
    ``fvd_hook``'s FVD/KVD of the samples decoded by the VAE the latent files record.

    What can fail is checked here, on every process, before training starts (with ``reference``: the VAE the latent
    files record has their config hash, else ``GenEvalError``; the I3D file exists, else ``MetricUnavailable``;
    ``reference`` has 2 usable clips). The rest is built at the first call (``LazyHook``: on the main process only,
    on the training device): the VAE and the I3D there, the reference features, and the training latents, which are
    the trainer's set (``data.shared_latent_set``), not a second copy."""
    from pvvae_cli.codec.latents import read_meta
    from pvvae_cli.gen.data import find_latent_files, shared_latent_set
    from pvvae_cli.gen.evaluation import sample_statistics

    i3d_path = None
    if reference:
        from pvvae_cli.metrics.network_files import I3D_SOURCE, resolve_network_file

        first = find_latent_files(cfg.data)[0][0]
        meta = read_meta(first)
        if vae_config_hash(meta.model) != meta.config_hash:
            raise GenEvalError(f"{meta.model}: not the VAE that encoded {first} (config hash differs); FVD needs it "
                               "to decode the samples")
        i3d_path = resolve_network_file(I3D_SOURCE, i3d, "--i3d")
        check_reference(reference, meta.encoded_frames)

    def build(model: LatteDiT) -> EvalHook:
        data = shared_latent_set(cfg.data, cfg.labels, cfg.class_from_folders)
        video_hook = None
        if reference:
            from pvvae_cli.codec.latents import config_hash
            from pvvae_cli.metrics.fvd import I3DFeatures
            from pvvae_cli.models.registry import load_model

            device = next(model.parameters()).device
            vae = load_model(data.meta.model, device=device)
            if config_hash(vae.config) != data.meta.config_hash:  # checked above; a folder changed since?
                raise GenEvalError(f"{data.meta.model}: not the VAE that encoded {data.files[0]} (config hash "
                                   "differs); FVD needs it to decode the samples")
            video_hook = fvd_hook(vae, reference, I3DFeatures(i3d_path, device=device), data.meta.encoded_frames,
                                  num, steps, cfg.seed)

        def hook(model: LatteDiT, step: int) -> dict[str, float]:
            out = sample_statistics(model, data, data.labels, num, steps, cfg.seed)
            if video_hook is not None:
                out.update(video_hook(model, step))
            return out

        return hook

    return LazyHook(build)
