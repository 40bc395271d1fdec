"""Peak memory of ``pvvae predict`` against ``pvvae decode`` of the same clip (issue 28, audit finding M3).

Usage: python benchmarks/bench_predict_memory.py [--width 1280] [--height 720] [--frames 17] [--model M]
       [--threads 1] [--workdir DIR]

Writes a synthetic ``--width`` x ``--height`` clip of ``--frames`` frames (a moving gradient, ``media.writer``),
then runs, each in a fresh wrapper process that reports its child's peak RSS (``getrusage(RUSAGE_CHILDREN)``):

- ``pvvae encode CLIP -o LAT --device cpu`` (for the decode; not compared),
- ``pvvae decode LAT -o DEC --device cpu``,
- ``pvvae predict CLIP -o PRED.mp4 --device cpu --context-frames 5 --future-frames F`` (``F = --frames - 5``, so
  predict writes as many frames as decode),

with the shipped default model unless ``--model``. Prints each peak and predict/decode, which the issue's done-when
wants at no more than 1.3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs one command and prints its peak RSS (KiB on Linux); a fresh process, so no earlier child counts.
WRAPPER = ("import resource, subprocess, sys\n"
           "r = subprocess.run(sys.argv[1:])\n"
           "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n")


def write_clip(path: Path, frames: int, height: int, width: int) -> None:
    import numpy as np

    from pvvae_cli.media.writer import write_video

    y, x = np.mgrid[0:height, 0:width]
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        clip[t, ..., 0] = (x + 8 * t) % 256
        clip[t, ..., 1] = (y + 4 * t) % 256
        clip[t, ..., 2] = ((x + y) // 4) % 256
    write_video(path, clip, 24.0)


def peak_rss_mib(cmd: list[str], env: dict) -> float:
    r = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("MAXRSS")]
    if not line or line[-1].split()[2] != "0":
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return int(line[-1].split()[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--frames", type=int, default=17, help="5 context + a multiple of 4")
    ap.add_argument("--model", default=None, help="default: the shipped model")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the commands")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    model = ["--model", a.model] if a.model else []
    clip = work / "clip.mp4"
    write_clip(clip, a.frames, a.height, a.width)
    common = ["--device", "cpu", *model]
    encode = peak_rss_mib(["pvvae", "encode", str(clip), "-o", str(work / "lat"), "-q", "--overwrite", *common], env)
    decode = peak_rss_mib(["pvvae", "decode", str(work / "lat"), "-o", str(work / "dec"), "-q", "--overwrite",
                           *common], env)
    predict = peak_rss_mib(["pvvae", "predict", str(clip), "-o", str(work / "pred.mp4"), "--context-frames", "5",
                            "--future-frames", str(a.frames - 5), *common], env)
    print(f"clip {a.width}x{a.height}, {a.frames} frames, model {a.model or 'default'}, "
          f"OMP_NUM_THREADS={a.threads}")
    print(f"peak RSS  encode {encode:8.0f} MiB")
    print(f"peak RSS  decode {decode:8.0f} MiB")
    print(f"peak RSS predict {predict:8.0f} MiB")
    print(f"predict / decode {predict / decode:8.2f}  (done-when: <= 1.3)")


if __name__ == "__main__":
    main()
