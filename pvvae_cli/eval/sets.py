"""Set against set: FVD and KVD between two collections of videos on the same I3D features (the generation
protocol, what a ``gen`` command reports), with the clip protocol of ``eval.protocol.load_clip``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pvvae_cli import __version__
from pvvae_cli.eval.protocol import ClipSkipped, load_clip
from pvvae_cli.media.discovery import collect_videos
from pvvae_cli.metrics.fvd import FeatureExtractor, extract_features, fvd_from_features, kernel_distance


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
    max_videos: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """FVD and KVD between two sets of videos (files, or folders searched recursively; at most ``max_videos`` of
    each), on the same feature network and clip protocol (first ``frames`` frames from ``start``; short side ->
    ``size`` + centre crop when given, else native size, which the I3D resizes to 224x224 itself). Returns every
    number and the protocol as a dict. Raises ``ValueError`` (``FileNotFoundError`` for a missing input) naming
    the set."""
    say = progress or (lambda _msg: None)
    skipped: list[str] = []
    reference = collect_videos(reference)[:max_videos]
    generated = collect_videos(generated)[:max_videos]

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
    n = f"{result['num_reference']} vs {result['num_generated']}"
    lines = [
        "| metric | value |", "|---|---|",
        f"| FVD ({n} clips) ↓ | {result['fvd']:.2f} |",  # FVD depends on the sample count: always give it
        f"| KVD ({n} clips) ↓ | {result['kvd']:.4f} ± {result['kvd_std']:.4f} |",
        "",
        f"protocol: {result['num_reference']} reference vs {result['num_generated']} generated clips, frames "
        f"{p['start']}..{p['start'] + p['frames'] - 1}, {size}; features: {p['features']}; KVD: {p['kvd']}",
    ]
    if result["skipped"]:
        lines.append(f"skipped {len(result['skipped'])} file(s): " + "; ".join(result["skipped"]))
    return "\n".join(lines)
