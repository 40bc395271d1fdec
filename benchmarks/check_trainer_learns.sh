#!/usr/bin/env bash
# Does the trainer learn? The tiny preset on synthetic clips through `pvvae train` (image stage, then the predictive
# video stage from its weights), validation PSNR every 50 steps, fp32, one thread. Run it against two checkouts
# (PYTHONPATH=OTHER_TREE) to compare the training loop of two versions at equal steps; the validation records also
# give the copy-last-frame baseline of the predicted frames (copy_psnr).
# Usage: bash benchmarks/check_trainer_learns.sh OUT_DIR
set -euo pipefail
out=$1
export OMP_NUM_THREADS=1
common=(--data synthetic:mix --size 64 --precision fp32 --device cpu --workers 0 --val-every 50 --val-clips 8
        --log-every 50 --seed 0 --quiet)
python -m pvvae_cli train --stage image --preset tiny --batch-size 8 --steps 150 --lr 1e-3 --out "$out/image" "${common[@]}"
python -m pvvae_cli train --stage video --init "$out/image" --frames 17 --batch-size 2 --steps 100 --lr 5e-4 \
    --out "$out/video" "${common[@]}"
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for stage in ("image", "video"):
    for line in (Path(sys.argv[1]) / stage / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "val":
            extra = (f"  predicted {r['pred_psnr']:.2f} dB (copy-last {r['copy_psnr']:.2f})" if "pred_psnr" in r else "")
            print(f"{stage} step {r['step']:4d}: recon {r['psnr_recon']:.2f} dB{extra}")
PY
