"""Encoding into a crowded output folder costs no more than into an empty one (issue 28, audit finding X10).

Usage: python benchmarks/bench_output_folder.py [--images 300] [--existing 100000] [--repeats 1] [--workdir DIR]

Writes ``--images`` 16x16 PNG images, then times the installed ``pvvae encode IMAGES -o OUT --model preset:tiny
--device cpu -q`` twice, one after the other: into an empty OUT, and into an OUT that already holds ``--existing``
files. The existing files are what a folder of earlier latents looks like to the runner: empty ``.safetensors``
files of other names (what the stale-temp sweep lists and filters; none of them is one of this run's outputs).
Each time is the wall time of the whole command (start-up and model set-up included, the same in both), the
fastest of ``--repeats``; the ratio crowded/empty is what the issue's "no more than 1.2x" is about. Both runs use
one thread (``OMP_NUM_THREADS=1``) so that a shared machine disturbs them less.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def write_images(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"img{i:05d}.png")


def fill(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        with open(folder / f"old{i:07d}.safetensors", "wb"):
            pass


def encode_seconds(images: Path, out: Path) -> float:
    exe = shutil.which("pvvae")
    assert exe, "the console command `pvvae` is not installed (pip install -e .)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([exe, "encode", str(images), "-o", str(out), "--model", "preset:tiny", "--device", "cpu",
                          "-q"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"pvvae encode failed ({res.returncode}):\n{res.stderr}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--existing", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None, help="Where to create the folders (default: a temp dir).")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_output_folder.", dir=args.workdir))
    try:
        images = root / "images"
        write_images(images, args.images)
        t0 = time.perf_counter()
        fill(root / "crowded-template", args.existing)
        print(f"{args.images} 16x16 images; {args.existing} existing files created in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {"empty": [], "crowded": []}
        for r in range(args.repeats):
            for kind in ("empty", "crowded"):
                out = root / f"{kind}-{r}"
                if kind == "crowded":
                    os.replace(root / "crowded-template", out)  # same folder, its files untouched so far
                times[kind].append(encode_seconds(images, out))
                if kind == "crowded":
                    for p in out.glob("img*.safetensors"):  # back to the existing files only, for the next repeat
                        p.unlink()
                    os.replace(out, root / "crowded-template")
                else:
                    shutil.rmtree(out)
        empty, crowded = min(times["empty"]), min(times["crowded"])
        print(f"empty output folder:            {empty:7.2f} s")
        print(f"folder with {args.existing:>7} files:      {crowded:7.2f} s")
        print(f"ratio crowded / empty:          {crowded / empty:7.2f}  (done when <= 1.2)")
        print(f"extra per output:               {(crowded - empty) / args.images * 1000:7.1f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
