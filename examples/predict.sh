#!/usr/bin/env bash
# Predict the future of a clip with the shipped model and write it beside the truth: the first CONTEXT frames are
# encoded, padding latents stand in for the next FUTURE frames, the decoder fills them in.
#
# Usage: examples/predict.sh VIDEO [OUT.mp4]           (default OUT: VIDEO's name + .predicted.mp4 in .)
# Settings (environment): MODEL= (default: the shipped model) CONTEXT=9 FUTURE=8 SIZE=256 START=0
#
# Writes OUT: ground truth (left) next to observed + predicted frames (right), and prints the prediction's PSNR
# and SSIM against the truth and against repeating the last observed frame (the copy-last baseline).
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
video=$1
name=$(basename "${video%.*}")
out=${2:-$name.predicted.mp4}
model=(); [ -z "${MODEL:-}" ] || model=(--model "$MODEL")
exec "${PVVAE:-pvvae}" predict "$video" -o "$out" "${model[@]}" --context-frames "${CONTEXT:-9}" \
    --future-frames "${FUTURE:-8}" --size "${SIZE:-256}" --start "${START:-0}" --side-by-side
