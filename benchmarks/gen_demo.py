"""The ``gen`` acceptance demo: a labelled synthetic video set (a square moving left or right), and a motion
direction score that tells whether generated videos show their class.

Usage:
  python benchmarks/gen_demo.py make-data OUT [--per-class 32] [--frames 17] [--size 64] [--seed 0]
      writes OUT/left/clipNNN.mp4 and OUT/right/clipNNN.mp4 (8 fps): a bright square of random colour, size and
      row, starting at a random column and moving 2 px per frame (wrapping), on a dark noisy background.
  python benchmarks/gen_demo.py score VIDEOS... [--classes left right] [--expect CLASS | --labels-from-names]
      the motion direction of each video: the brightness-weighted centroid column of each frame (pixels above
      the frame's 90th percentile), its circular frame-to-frame displacement, summed; negative = left. Prints the
      fraction of videos whose direction matches (the class of a generated sample is read from --expect, or from
      a left/right folder, or from the samples.jsonl that pvvae gen sample writes).

The pipeline (README, "Generate"): pvvae train (tiny VAE) -> pvvae encode -> pvvae gen train -> pvvae gen sample
-> score. Chance is 50 %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def make_data(out: Path, per_class: int, frames: int, size: int, seed: int) -> None:
    from pvvae_cli.media.writer import write_video

    rng = np.random.default_rng(seed)
    for name, direction in (("left", -1), ("right", 1)):
        for i in range(per_class):
            side = int(rng.integers(size // 6, size // 3))
            row = int(rng.integers(0, size - side))
            col = int(rng.integers(0, size))
            colour = rng.integers(150, 256, 3)
            clip = rng.integers(0, 40, (frames, size, size, 3)).astype(np.uint8)
            for f in range(frames):
                cols = (col + direction * 2 * f + np.arange(side)) % size  # wraps around the frame
                clip[f, row : row + side][:, cols] = colour
            write_video(out / name / f"clip{i:03d}.mp4", clip, fps=8.0)
    print(f"wrote {2 * per_class} clips of {frames} frames {size}x{size} to {out}")


def direction(frames: np.ndarray) -> float:
    """Summed circular displacement (px) of the bright centroid over a ``(T, H, W, 3)`` uint8 clip."""
    g = frames.astype(np.float64).mean(-1)  # (T, H, W)
    t, _, w = g.shape
    angles = 2 * np.pi * np.arange(w) / w
    total = 0.0
    prev = None
    for f in range(t):
        m = np.maximum(g[f] - np.percentile(g[f], 90), 0).sum(0)  # column mass of the brightest pixels
        if m.sum() == 0:
            continue
        angle = np.angle((m * np.exp(1j * angles)).sum())  # circular mean column (wrapping motion)
        if prev is not None:
            total += (np.angle(np.exp(1j * (angle - prev)))) * w / (2 * np.pi)
        prev = angle
    return total


def video_class(path: Path, expect: str | None) -> str:
    if expect:
        return expect
    if path.parent.name in ("left", "right"):
        return path.parent.name
    manifest = path.parent / "samples.jsonl"  # written by pvvae gen sample
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            rec = json.loads(line)
            if rec["video"] == path.name:
                return rec["class_name"]
    raise SystemExit(f"{path}: class unknown (no left/right folder, no samples.jsonl entry); pass --expect")


def score(videos: list[Path], expect: str | None) -> None:
    from pvvae_cli.media.video_io import read_clip

    files = []
    for v in videos:
        files += sorted(v.rglob("*.mp4")) if v.is_dir() else [v]
    hits, counts = 0, {"left": 0, "right": 0}
    for f in files:
        d = direction(read_clip(f)[0])
        said = "right" if d > 0 else "left"
        want = video_class(f, expect)
        counts[said] += 1
        hits += said == want
    print(f"{len(files)} videos: direction matches the class in {hits}/{len(files)} = {hits / len(files):.1%} "
          f"(read as left {counts['left']}, right {counts['right']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-data")
    m.add_argument("out", type=Path)
    m.add_argument("--per-class", type=int, default=32)
    m.add_argument("--frames", type=int, default=17)
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("videos", type=Path, nargs="+")
    s.add_argument("--expect", choices=["left", "right"])
    a = p.parse_args()
    if a.cmd == "make-data":
        make_data(a.out, a.per_class, a.frames, a.size, a.seed)
    else:
        score(a.videos, a.expect)


if __name__ == "__main__":
    main()
