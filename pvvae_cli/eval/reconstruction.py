"""Reconstruction (and prediction) quality of one or more models on the same clips: the library behind
``pvvae eval``.

Each model encodes every protocol clip (``eval.protocol``) to the posterior mode and decodes it; the output is
clamped to [-1, 1]. Metrics (``pvvae_cli.metrics``): PSNR per frame on [0, 1] then the mean; SSIM with an 11x11
Gaussian window (sigma 1.5); ST-LPIPS (alex) and, where its backbone exists, LPIPS (AlexNet) per frame on [-1, 1];
rFVD between the Kinetics-400 I3D features of the original and the reconstructed clips (N clips against the same
N clips: biased for small N, so the count is reported with it). Per-video values are averaged over clips with
equal weight. A metric whose network is not available is reported as ``unavailable`` with the reason, never as a
number. With a prediction context, each model also predicts the rest of the clip from its first frames
(``codec.prediction``), scored against the copy-last-frame baseline.

Pixels are ``(B, 3, T, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pvvae_cli.codec.prediction import predict_future, score_prediction
from pvvae_cli.eval.protocol import EvalProtocol
from pvvae_cli.eval.report import PER_VIDEO_KEYS, EvalReport, ModelResult
from pvvae_cli.eval.speed import SpeedProtocol, measure_speed_isolated
from pvvae_cli.metrics.fvd import FeatureExtractor, extract_features, fvd_from_features, load_i3d
from pvvae_cli.metrics.image import psnr, ssim
from pvvae_cli.metrics.lpips_metric import FrameDistance, LPIPSMetric, STLPIPSMetric
from pvvae_cli.metrics.perceptual import MetricUnavailable
from pvvae_cli.runtime.device import autocast

if TYPE_CHECKING:
    from pvvae_cli.models.protocol import VideoAutoencoder


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot be computed here, and why (with the fix)."""

    reason: str


@dataclass
class OpenMetrics:
    """The network metrics of one evaluation: each the metric, ``Unavailable(reason)`` where its weights cannot be
    had (``metrics.MetricUnavailable``), or None when not asked for."""

    stlpips: FrameDistance | Unavailable | None = None
    lpips: FrameDistance | Unavailable | None = None
    features: FeatureExtractor | Unavailable | None = None


def open_metrics(
    stlpips: bool,
    lpips: bool,
    fvd: bool,
    device: torch.device,
    stlpips_path: str | Path | None = None,
    i3d: str | Path | None = None,
) -> OpenMetrics:
    """Open the network metrics for ``evaluate``; nothing is downloaded (``pvvae setup-metrics`` fetches them)."""

    def attempt(make):
        try:
            return make()
        except MetricUnavailable as e:
            return Unavailable(str(e))

    return OpenMetrics(
        stlpips=attempt(lambda: STLPIPSMetric(stlpips_path, device=device)) if stlpips else None,
        lpips=attempt(lambda: LPIPSMetric("alex", device=device)) if lpips else None,
        features=attempt(lambda: load_i3d(i3d, device=device)) if fvd else None,
    )


@torch.no_grad()
def evaluate(
    models: Sequence[tuple[str, str, VideoAutoencoder]],
    videos: Sequence[str | Path],
    protocol: EvalProtocol,
    dtype: torch.dtype = torch.float32,
    lpips: FrameDistance | Unavailable | None = None,
    features: FeatureExtractor | Unavailable | None = None,
    speed: SpeedProtocol | None = None,
    progress: Callable[[str], None] | None = None,
    stlpips: FrameDistance | Unavailable | None = None,
) -> EvalReport:
    """Evaluate ``models`` (``(name, spec, vae)``, each already on its device) on ``videos`` (files) under
    ``protocol``.

    ``stlpips`` / ``lpips`` / ``features`` (the rFVD network): the metric object, ``Unavailable(reason)`` to
    report it as unavailable, or ``None`` to leave it out (``open_metrics``). The seconds each network takes are
    measured and reported per clip (``protocol["network_seconds_per_clip"]``). ``speed``: also run the speed
    protocol per model.
    Raises ``ValueError`` for a model that cannot run the protocol, when no clip can be evaluated, or for a
    non-finite result.
    """
    say = progress or (lambda _msg: None)
    for name, _spec, vae in models:
        try:
            protocol.check_model(vae)
            if speed is not None:
                speed.check_model(vae)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    results = [ModelResult(name, spec, vae.config.tag, sum(p.numel() for p in vae.parameters()))
               for name, spec, vae in models]
    min_frames = getattr(features, "min_frames", 1)
    if features is not None and not isinstance(features, Unavailable) and protocol.frames < min_frames:
        features = Unavailable(f"rFVD: the I3D needs clips of at least {min_frames} frames, the protocol has "
                               f"{protocol.frames} (--frames)")
    for r in results:
        for key, source in (("stlpips", stlpips), ("lpips", lpips), ("rfvd", features)):
            if isinstance(source, Unavailable):
                r.unavailable[key] = source.reason
    per_video: list[list[dict]] = [[] for _ in models]
    orig_feats: list[np.ndarray] = []
    recon_feats: list[list[np.ndarray]] = [[] for _ in models]
    use_features = features is not None and not isinstance(features, Unavailable)
    frame_metrics = {key: m for key, m in (("stlpips", stlpips), ("lpips", lpips))
                     if m is not None and not isinstance(m, Unavailable)}
    seconds = {key: 0.0 for key in frame_metrics} | ({"i3d": 0.0} if use_features else {})
    calls = {key: 0 for key in seconds}  # clips each network scored (a clip per model; I3D: also the originals)

    def timed(key: str, n: int, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        seconds[key] += time.perf_counter() - t0
        calls[key] += n
        return out
    kept: list[str] = []
    skipped: list[str] = []
    k = protocol.predict_context

    def run_batch(names: list[str], clips: list[torch.Tensor]) -> None:
        x = torch.stack(clips)  # (B, 3, T, S, S) on the CPU
        if use_features:
            orig_feats.append(timed("i3d", len(clips), extract_features, features, [x], len(clips)))
        for i, (_name, _spec, vae) in enumerate(models):
            device = next(vae.parameters()).device
            with autocast(device, dtype):
                recon = vae.decode(vae.encode(x.to(device)).mode())
            recon = recon.float().clamp(-1, 1).cpu()
            rows = [{"video": n, "psnr": float(p), "ssim": float(s)}
                    for n, p, s in zip(names, psnr(recon, x), ssim(recon, x), strict=True)]
            for key, metric in frame_metrics.items():
                for row, v in zip(rows, timed(key, len(clips), metric, recon, x), strict=True):
                    row[key] = float(v)
            if use_features:
                recon_feats[i].append(timed("i3d", len(clips), extract_features, features, [recon], len(clips)))
            if k is not None:
                gen = torch.Generator(device=device).manual_seed(protocol.seed)
                pred = predict_future(vae, x[:, :, :k], protocol.frames - k, protocol.padding, gen, dtype).cpu()
                _, per = score_prediction(pred[:, :, k:], x[:, :, k:], x[:, :, k - 1 : k])
                for j, row in enumerate(rows):
                    row |= {"pred_psnr": float(per["psnr"][j]), "pred_ssim": float(per["ssim"][j]),
                            "copy_psnr": float(per["copy_psnr"][j]), "copy_ssim": float(per["copy_ssim"][j])}
            per_video[i].extend(rows)

    names: list[str] = []
    clips: list[torch.Tensor] = []
    for name, clip in protocol.clips(videos):
        if clip is None:
            skipped.append(name)
            say(f"skip {name}")
            continue
        names.append(name)
        clips.append(clip)
        kept.append(name)
        if len(clips) == protocol.batch_size:
            say(f"[{len(kept)}] {name}")
            run_batch(names, clips)
            names, clips = [], []
    if clips:
        say(f"[{len(kept)}] {names[-1]}")
        run_batch(names, clips)
    if not kept:
        raise ValueError("no clip could be evaluated: " + "; ".join(skipped))

    for i, r in enumerate(results):
        r.per_video = per_video[i]
        for key in PER_VIDEO_KEYS:
            values = [row[key] for row in r.per_video if key in row]
            if values:
                r.metrics[key] = float(np.mean(values))
        if use_features:
            if len(kept) < 2:
                r.unavailable["rfvd"] = f"rFVD needs at least 2 videos, got {len(kept)}"
            else:
                r.metrics["rfvd"] = fvd_from_features(np.concatenate(orig_feats), np.concatenate(recon_feats[i]))
        if speed is not None:
            say(f"speed: {r.name}")
            r.speed = measure_speed_isolated(models[i][2], speed, dtype, progress=say)
            r.metrics["it_s"] = r.speed["it_s"]
            r.metrics["peak_memory_gib"] = r.speed["peak_memory_gib"]
        for key, value in r.metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"{r.name}: {key} is not finite ({value}); the model output is invalid")

    device = next(models[0][2].parameters()).device
    implementations = {
        "psnr": "pvvae_cli.metrics.image.psnr: per frame on [0, 1] (MSE), then the mean over frames; "
                "identical frames capped at 100 dB",
        "ssim": "pvvae_cli.metrics.image.ssim: 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03, valid region, "
                "per channel then mean, per frame then mean",
    }
    for key, metric in frame_metrics.items():
        implementations[key] = metric.description
    if use_features:
        implementations["rfvd"] = (f"{getattr(features, 'description', features.name)}; Fréchet distance of "
                                   f"original vs reconstructed feature Gaussians (population covariance) over "
                                   f"{len(kept)} clips each: biased upwards for few clips, compare at equal counts")
    if k is not None:
        implementations["prediction"] = (f"encode frames 0..{k - 1} (posterior mode), append padding latents, "
                                         f"decode; PSNR/SSIM on frames {k}..{protocol.frames - 1}; baseline: "
                                         f"frame {k - 1} repeated")
    proto = asdict(protocol) | {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                                "posterior": "mode", "resize": "short side bilinear (antialiased), centre crop",
                                "network_seconds_per_clip": {k: seconds[k] / calls[k] for k in seconds if calls[k]}}
    return EvalReport(proto, implementations, kept, skipped, results)
