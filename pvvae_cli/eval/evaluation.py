"""Reconstruction and prediction quality of one or more models on the same clips, and the speed protocol.

The protocol (the paper's, §4 / Table 2): each clip's first ``frames`` (17) frames from ``start``, the short
side resized to ``size`` (bilinear, antialiased when shrinking) and a centre ``size x size`` crop; each model
encodes to the posterior mode and decodes; the output is clamped to [-1, 1]. Metrics (``pvvae_cli.metrics``):
PSNR per frame on [0, 1] then the mean; SSIM with an 11x11 Gaussian window (sigma 1.5); LPIPS (AlexNet) per
frame on [-1, 1]; rFVD between the I3D features of the original and the reconstructed clips. Per-video values
are averaged over clips with equal weight. A metric whose network is not available is reported as
``unavailable`` with the reason, never as a number.

``compare_video_sets`` is the generation protocol: FVD and KVD between two folders of videos on the same I3D
features (what ``gen`` reports).

Pixels are ``(B, 3, T, H, W)`` (single clips ``(3, T, H, W)``) in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import json
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pvvae_cli import __version__
from pvvae_cli.codec.prediction import check_prediction_frames, predict_future, score_prediction
from pvvae_cli.media.video_io import IMAGE_EXTS, VIDEO_EXTS, VideoReadError, frames_to_tensor, probe, read_clip
from pvvae_cli.metrics.fvd import FeatureExtractor, extract_features, fvd_from_features, kernel_distance
from pvvae_cli.metrics.image import psnr, ssim
from pvvae_cli.metrics.lpips_metric import LPIPSMetric
from pvvae_cli.models.pvvae.model import VideoVAE
from pvvae_cli.runtime.atomic import atomic_path
from pvvae_cli.runtime.device import autocast
from pvvae_cli.train.data import resize_crop


class ClipSkipped(ValueError):
    """A clip that cannot enter the protocol (too short, unreadable); the message says why."""


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot be computed here, and why (with the fix)."""

    reason: str


# ------------------------------------------------------------------------------------------------ clips
def collect_videos(inputs: Sequence[str | Path], include_images: bool = False) -> list[Path]:
    """Files given directly (any supported type) plus the videos found recursively under folders, in order;
    hidden files skipped. Raises ``FileNotFoundError`` for a missing input, ``ValueError`` if nothing is found."""
    exts = VIDEO_EXTS | IMAGE_EXTS if include_images else VIDEO_EXTS
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_file():
            out.append(p)
            continue
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                       and not f.name.startswith("."))
        if not found:
            raise ValueError(f"{p}: no video files found ({', '.join(sorted(exts))})")
        out.extend(found)
    return out


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, T, H, W)`` in [-1, 1] -> ``(3, T, size, size)``: short side resized to ``size``, centre crop."""
    return resize_crop(x, size)


def load_clip(path: str | Path, frames: int, size: int | None, start: int = 0) -> torch.Tensor:
    """The protocol's clip: ``(3, frames, size, size)`` in [-1, 1] (native size when ``size`` is None).
    Raises ``ClipSkipped`` for a clip with fewer than ``start + frames`` frames or one that cannot be read."""
    try:
        info = probe(path)
        if info.num_frames < start + frames:
            raise ClipSkipped(f"{path}: has {info.num_frames} frames, the protocol needs {start + frames} "
                              f"(start {start} + {frames})")
        raw, _ = read_clip(path, start=start, num_frames=frames)
    except VideoReadError as e:
        raise ClipSkipped(str(e)) from e
    x = frames_to_tensor(raw)
    return x if size is None else resize_center_crop(x, size)


# ------------------------------------------------------------------------------------------------ protocol
@dataclass(frozen=True)
class EvalProtocol:
    """What is measured; written into the JSON so numbers can be reproduced."""

    frames: int = 17
    size: int = 256
    start: int = 0
    predict_context: int | None = None
    padding: str = "auto"  # padding latents for prediction: auto (the model's), learnable, gaussian
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 1 + 4k (the model's clip length), got {self.frames}; "
                             f"nearest valid: {1 + 4 * ((self.frames - 1) // 4)} or {5 + 4 * ((self.frames - 1) // 4)}")
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a positive multiple of 16, got {self.size}")
        if self.predict_context is not None:
            check_prediction_frames(self.predict_context, self.frames - self.predict_context)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class SpeedProtocol:
    """The paper's inference speed protocol: ``batch`` clips of ``frames`` frames at ``size``, ``warmup`` steps,
    then the mean of ``steps`` timed steps; one step = encode (posterior mode) + decode."""

    frames: int = 17
    batch: int = 4
    size: int = 256
    warmup: int = 50
    steps: int = 100


def _peak_rss_gib() -> float:
    # ru_maxrss is KiB on Linux: the whole process's peak, not one step's.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@torch.no_grad()
def measure_speed(vae: VideoVAE, protocol: SpeedProtocol, dtype: torch.dtype = torch.float32) -> dict:
    """Time ``protocol`` on the model's device: it/s (steps per second), seconds per step, and peak memory
    (CUDA: ``max_memory_allocated`` during the timed steps; CPU: the process's peak RSS, labelled as such)."""
    device = next(vae.parameters()).device
    x = torch.rand(protocol.batch, 3, protocol.frames, protocol.size, protocol.size, device=device) * 2 - 1

    def step() -> None:
        with autocast(device, dtype):
            vae.decode(vae.encode(x).mode())
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(protocol.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(protocol.steps):
        step()
    elapsed = time.perf_counter() - t0
    out = asdict(protocol) | {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                              "seconds_per_step": elapsed / protocol.steps, "it_s": protocol.steps / elapsed}
    if device.type == "cuda":
        out |= {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "memory_measure": "torch.cuda.max_memory_allocated during the timed steps"}
    else:
        out |= {"peak_memory_gib": _peak_rss_gib(),
                "memory_measure": "process peak RSS (ru_maxrss; the whole process, CPU)"}
    return out


# ------------------------------------------------------------------------------------------------ results
METRIC_ROWS = [  # key, label, format, direction
    ("psnr", "PSNR (dB) ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("lpips", "LPIPS ↓", "{:.4f}"),
    ("rfvd", "rFVD ↓", "{:.2f}"),
    ("pred_psnr", "prediction PSNR (dB) ↑", "{:.2f}"),
    ("pred_ssim", "prediction SSIM ↑", "{:.4f}"),
    ("copy_psnr", "copy-last-frame PSNR (dB)", "{:.2f}"),
    ("copy_ssim", "copy-last-frame SSIM", "{:.4f}"),
    ("it_s", "speed (it/s) ↑", "{:.3f}"),
    ("peak_memory_gib", "peak memory (GiB)", "{:.2f}"),
]
PER_VIDEO_KEYS = ["psnr", "ssim", "lpips", "pred_psnr", "pred_ssim", "copy_psnr", "copy_ssim"]


@dataclass
class ModelResult:
    name: str
    spec: str
    tag: str
    parameters: int
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    per_video: list[dict] = field(default_factory=list)
    speed: dict | None = None


@dataclass
class EvalReport:
    protocol: dict
    implementations: dict[str, str]
    videos: list[str]
    skipped: list[str]
    models: list[ModelResult]

    def to_dict(self) -> dict:
        return {"pvvae_version": __version__, "protocol": self.protocol | {"metric_implementations":
                self.implementations}, "num_videos": len(self.videos), "videos": self.videos,
                "skipped": self.skipped, "models": [asdict(m) for m in self.models]}

    def to_markdown(self) -> str:
        names = [m.name for m in self.models]
        lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        notes: dict[str, int] = {}
        for key, label, fmt in METRIC_ROWS:
            if not any(key in m.metrics or key in m.unavailable for m in self.models):
                continue
            if key == "it_s" and self.models[0].speed:
                s = self.models[0].speed
                label = f"speed (it/s, {s['frames']}×{s['size']}², batch {s['batch']}) ↑"
            if key == "peak_memory_gib" and self.models[0].speed:
                cuda = self.models[0].speed["device"].startswith("cuda")
                label = "peak memory (GiB, CUDA)" if cuda else "process peak RSS (GiB, CPU, whole process)"
            cells = []
            for m in self.models:
                if key in m.metrics:
                    cells.append(fmt.format(m.metrics[key]))
                else:
                    reason = m.unavailable.get(key, "")
                    n = notes.setdefault(reason, len(notes) + 1)
                    cells.append(f"unavailable [{n}]")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        p = self.protocol
        lines.append("")
        desc = (f"{len(self.videos)} video(s), frames {p['start']}..{p['start'] + p['frames'] - 1}, short side → "
                f"{p['size']} + centre crop, posterior mode, {p['device']} {p['dtype']}")
        if p.get("predict_context"):
            desc += (f"; prediction: {p['predict_context']} context + {p['frames'] - p['predict_context']} future "
                     f"frames, {p['padding']} padding")
        lines.append(f"protocol: {desc}")
        for reason, n in notes.items():
            lines.append(f"[{n}] {reason}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s): " + "; ".join(self.skipped))
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def per_video_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["model", "video", *PER_VIDEO_KEYS])
        for m in self.models:
            for row in m.per_video:
                writer.writerow([m.name, row["video"]] + [_csv_num(row.get(k)) for k in PER_VIDEO_KEYS])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(self.per_video_csv())


def _csv_num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(
    models: Sequence[tuple[str, str, VideoVAE]],
    videos: Sequence[str | Path],
    protocol: EvalProtocol,
    dtype: torch.dtype = torch.float32,
    lpips: LPIPSMetric | Unavailable | None = None,
    features: FeatureExtractor | Unavailable | None = None,
    speed: SpeedProtocol | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate ``models`` (``(name, spec, vae)``, each already on its device) on ``videos`` under ``protocol``.

    ``lpips`` / ``features`` (the rFVD network): the metric object, ``Unavailable(reason)`` to report it as
    unavailable, or ``None`` to leave it out. ``speed``: also run the speed protocol per model.
    """
    say = progress or (lambda _msg: None)
    results = [ModelResult(name, spec, vae.config.tag, vae.num_parameters()) for name, spec, vae in models]
    for r in results:
        for key, source in (("lpips", lpips), ("rfvd", features)):
            if isinstance(source, Unavailable):
                r.unavailable[key] = source.reason
    per_video: list[list[dict]] = [[] for _ in models]
    orig_feats: list[np.ndarray] = []
    recon_feats: list[list[np.ndarray]] = [[] for _ in models]
    use_features = features is not None and not isinstance(features, Unavailable)
    use_lpips = lpips is not None and not isinstance(lpips, Unavailable)
    kept: list[str] = []
    skipped: list[str] = []
    k = protocol.predict_context

    def run_batch(names: list[str], clips: list[torch.Tensor]) -> None:
        x = torch.stack(clips)  # (B, 3, T, S, S) on the CPU
        if use_features:
            orig_feats.append(extract_features(features, [x], batch_size=len(clips)))
        for i, (_name, _spec, vae) in enumerate(models):
            device = next(vae.parameters()).device
            with autocast(device, dtype):
                recon = vae.decode(vae.encode(x.to(device)).mode())
            recon = recon.float().clamp(-1, 1).cpu()
            rows = [{"video": n, "psnr": float(p), "ssim": float(s)}
                    for n, p, s in zip(names, psnr(recon, x), ssim(recon, x), strict=True)]
            if use_lpips:
                for row, v in zip(rows, lpips(recon, x), strict=True):
                    row["lpips"] = float(v)
            if use_features:
                recon_feats[i].append(extract_features(features, [recon], batch_size=len(clips)))
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
    for path in videos:
        try:
            clip = load_clip(path, protocol.frames, protocol.size, protocol.start)
        except ClipSkipped as e:
            skipped.append(str(e))
            say(f"skip {e}")
            continue
        names.append(str(path))
        clips.append(clip)
        kept.append(str(path))
        if len(clips) == protocol.batch_size:
            say(f"[{len(kept)}/{len(videos)}] {path}")
            run_batch(names, clips)
            names, clips = [], []
    if clips:
        say(f"[{len(kept)}/{len(videos)}] {names[-1]}")
        run_batch(names, clips)
    if not kept:
        raise ValueError("no clip could be evaluated: " + "; ".join(skipped))

    for i, r in enumerate(results):
        r.per_video = per_video[i]
        for key in PER_VIDEO_KEYS:
            values = [row[key] for row in r.per_video if key in row]
            if values:
                r.metrics[key] = _mean(values)
        if use_features:
            if len(kept) < 2:
                r.unavailable["rfvd"] = f"rFVD needs at least 2 videos, got {len(kept)}"
            else:
                r.metrics["rfvd"] = fvd_from_features(np.concatenate(orig_feats), np.concatenate(recon_feats[i]))
        if speed is not None:
            say(f"speed: {r.name}")
            r.speed = measure_speed(models[i][2], speed, dtype)
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
    if use_lpips:
        implementations["lpips"] = lpips.description
    if use_features:
        implementations["rfvd"] = (f"{getattr(features, 'description', features.name)}; Fréchet distance of "
                                   "original vs reconstructed feature Gaussians (population covariance)")
    if k is not None:
        implementations["prediction"] = (f"encode frames 0..{k - 1} (posterior mode), append padding latents, "
                                         f"decode; PSNR/SSIM on frames {k}..{protocol.frames - 1}; baseline: "
                                         f"frame {k - 1} repeated")
    proto = asdict(protocol) | {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                                "posterior": "mode", "resize": "short side bilinear (antialiased), centre crop"}
    return EvalReport(proto, implementations, kept, skipped, results)


# ------------------------------------------------------------------------------------------------ two sets
def compare_video_sets(
    reference: Sequence[str | Path],
    generated: Sequence[str | Path],
    features: FeatureExtractor,
    frames: int = 16,
    size: int | None = None,
    start: int = 0,
    batch_size: int = 8,
    kvd_subsets: int = 100,
    kvd_subset_size: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """FVD and KVD between two sets of videos, on the same feature network and clip protocol (first ``frames``
    frames from ``start``; short side -> ``size`` + centre crop when given, else native size, which the I3D
    resizes to 224x224 itself). Returns every number and the protocol as a dict."""
    say = progress or (lambda _msg: None)
    skipped: list[str] = []

    def feats_of(paths: Sequence[str | Path], label: str) -> np.ndarray:
        def clips():
            for p in paths:
                try:
                    yield load_clip(p, frames, size, start)
                except ClipSkipped as e:
                    skipped.append(str(e))
                    say(f"skip {e}")

        say(f"{label}: {len(paths)} file(s)")
        try:
            out = extract_features(features, clips(), batch_size=batch_size)
        except ValueError:
            raise ValueError(f"{label}: no usable clips ({'; '.join(skipped) or 'none given'})") from None
        if out.shape[0] < 2:
            raise ValueError(f"{label}: FVD needs at least 2 clips, got {out.shape[0]}")
        return out

    ref = feats_of(reference, "reference")
    gen = feats_of(generated, "generated")
    kvd, kvd_std = kernel_distance(ref, gen, num_subsets=kvd_subsets, subset_size=kvd_subset_size)
    return {
        "pvvae_version": __version__,
        "fvd": fvd_from_features(ref, gen),
        "kvd": kvd,
        "kvd_std": kvd_std,
        "num_reference": int(ref.shape[0]),
        "num_generated": int(gen.shape[0]),
        "skipped": skipped,
        "protocol": {"frames": frames, "start": start, "size": size, "features": getattr(features, "description",
                     features.name), "fvd": "Fréchet distance of feature Gaussians (population covariance)",
                     "kvd": f"polynomial kernel (x.y/d + 1)^3 MMD^2, unbiased estimator, {kvd_subsets} subsets of "
                            f"min({kvd_subset_size}, N), not scaled"},
    }


def sets_markdown(result: dict) -> str:
    """The two-set comparison as a markdown table with its protocol."""
    p = result["protocol"]
    size = "native size" if p["size"] is None else f"short side → {p['size']} + centre crop"
    lines = [
        "| metric | value |", "|---|---|",
        f"| FVD ↓ | {result['fvd']:.2f} |",
        f"| KVD ↓ | {result['kvd']:.4f} ± {result['kvd_std']:.4f} |",
        "",
        f"protocol: {result['num_reference']} reference vs {result['num_generated']} generated clips, frames "
        f"{p['start']}..{p['start'] + p['frames'] - 1}, {size}; features: {p['features']}; KVD: {p['kvd']}",
    ]
    if result["skipped"]:
        lines.append(f"skipped {len(result['skipped'])} file(s): " + "; ".join(result["skipped"]))
    return "\n".join(lines)


def write_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
