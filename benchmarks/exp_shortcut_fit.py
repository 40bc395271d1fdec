"""Experiment (issue 13): how many training crops the ``--shortcut-pca`` fit needs, against the gate's block PCA.

The linear shortcut of a ``--shortcut-pca N`` model is block PCA fitted on N training crops (``--size`` squares,
multi-scale with ``--scale-max``) before step 0, so the model starts as that codec. A 64² crop holds 16 blocks per
4-frame group against 3,072 numbers per block, so a small N fits a poor PCA. Printed: held-out PSNR (dB) at 64², 128²
and 256² of (a) the gate's codec, block PCA fitted per size on ``--windows``×4 windows of each training clip
(``bench_baselines.py``), and (b) the shortcut's fit on N crops for each N.

    python benchmarks/exp_shortcut_fit.py --train data/train --heldout data/heldout [--crops 64 256 1024 2048]

Measured (0.7.0, 7 training clips of examples/get_data.sh, 8 held-out windows, 32 components; rows: where the PCA
was fitted, columns: held-out PSNR at 64² / 128² / 256²): gate at 64² 23.00 / 24.02 / 24.76, at 128² 23.43 / 24.50 /
25.45, at 256² 23.67 / 24.71 / 25.59; 1024 crops of 64² (short side 64..256) 23.78 / 24.78 / 25.61 (loading them:
284 s on one thread). Figures before 0.7.0 were on partly misread held-out clips (CHANGELOG).
"""

from __future__ import annotations

import argparse
import time

from bench_baselines import windows  # this script's folder is on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default="data/train")
    ap.add_argument("--heldout", default="data/heldout")
    ap.add_argument("--crops", nargs="+", type=int, default=[64, 256, 1024, 2048])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--scale-max", type=int, default=256)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--windows", type=int, default=4)
    args = ap.parse_args()

    from pvvae_cli.eval.baselines import BlockPCA
    from pvvae_cli.metrics.image import psnr_frames
    from pvvae_cli.train.data import make_dataset

    sizes = (64, 128, 256)
    held = {s: windows(args.heldout, 17, args.windows, s) for s in sizes}

    def scores(pca: BlockPCA) -> str:
        return " / ".join(f"{sum(float(psnr_frames(pca.reconstruct(x[None]), x[None]).mean()) for x in h) / len(h):.2f}"
                          for h in held.values())

    print(f"held-out PSNR dB at {' / '.join(f'{s}²' for s in sizes)}")
    for s in sizes:
        gate = BlockPCA.fit(windows(args.train, 17, args.windows * 4, s), components=args.components)
        print(f"gate: block PCA fitted at {s}²: {scores(gate)}", flush=True)
    data = make_dataset([args.train], 17, args.size, scale_max=args.scale_max)
    t0 = time.perf_counter()
    crops = [data[i][0] for i in range(max(args.crops))]
    print(f"loaded {len(crops)} crops in {time.perf_counter() - t0:.0f} s")
    for n in args.crops:
        print(f"shortcut fit on {n} crops of {args.size}² (short side {args.size}..{args.scale_max}): "
              f"{scores(BlockPCA.fit(crops[:n], components=args.components))}", flush=True)


if __name__ == "__main__":
    main()
