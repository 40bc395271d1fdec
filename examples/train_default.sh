#!/usr/bin/env bash
# The default model's recipe: the paper's three stages with pvvae's own commands, on the data of
# examples/get_data.sh. Re-running continues where a stage stopped (--resume); INIT=weights-folder starts
# stage 1 from existing weights (e.g. the shipped model) instead of random ones, so later work (or a GPU) can
# train it further and ship a new version.
#
# Usage: examples/train_default.sh [RUN_ROOT]            (default: runs/default)
# Settings (environment): DATA=data PRESET=small SIZE=64 SCALE_MAX=0 FRAMES=17 BATCH=4 IMAGE_STEPS=2000
#   VIDEO_STEPS=2000 DECODER_STEPS=500 LR= (the preset's) DECODER_LR= (LR) EMA=0 PRECISION=fp32 INIT=
#   VAL_EVERY=250 DEVICE=auto PERCEPTUAL=none SHORTCUT_PCA=0 FREEZE_SHORTCUT=0 REFINER=0 GAN_WEIGHT= (the CLI's: 0.2, on from
#   step 5000 in stage 2 and from step 0 in stage 3; 0 = no discriminator: cheaper on a CPU, and PSNR is what the
#   gate measures)
# SCALE_MAX=N (> SIZE): multi-scale crops (`--scale-max`): the model sees frames at up to N on the short side.
# SHORTCUT_PCA=N (> 0): the model gets the linear block shortcut fitted by block PCA on N training clips
# (`pvvae train --shortcut-pca`), so it starts at the PCA codec; stage 1 (images) is then skipped, because the
# shortcut's later-frame maps are fitted on video clips, in stage 2. The fit needs many blocks: at SIZE=64 a clip gives
# 16 per group, so use ~1024 clips (benchmarks/exp_shortcut_fit.py measures the fit against the gate's PCA).
# FREEZE_SHORTCUT=1: every stage keeps the shortcut at that fit (`--freeze-shortcut`); only the network learns.
# REFINER=N (> 0): the decoder gets a pixel refiner of width N (`--refiner`: a residual group-causal post-filter on its
# output, starting as the identity), the part that learns to correct the block code within a CPU budget.
#
# HR_SIZE=N HR_STEPS=M (> 0): stage 4, a second decoder fine-tune from stage 3 on N x N crops (short side N..SCALE_MAX
# when SCALE_MAX > N), at HR_LR (default DECODER_LR): the larger latent grid the decoder sees at 128-256 pixels.
# PERC_STEPS=M PERC_WEIGHT=W (> 0): stage 5, a last decoder fine-tune from the stage before with the ST-LPIPS term
# (`--perceptual stlpips --perceptual-weight W`, default 0.02) at PERC_LR (default DECODER_LR): an MSE-trained decoder
# smooths, and the gate measures ST-LPIPS too. Validation then logs the distance next to PSNR (`perceptual_recon`).
# The shipped weights are those of the last stage that ran (5-decoder-perceptual, 4-decoder-hr, else 3-decoder).
# Each invocation appends its settings to RUN_ROOT/recipe.log (ship_model.py puts them in the model card).
#
# Stage 1: images (1-frame clips of the training videos' frames and the photographs);
# stage 2: predictive video training (drop trailing groups, motion loss) from stage 1;
# stage 3: decoder fine-tuning (encoder frozen) from stage 2. Each stage exports RUN/weights/.
# Validation is on DATA/heldout (whole clips never trained on). Then measure with, e.g.:
#   pvvae eval DATA/heldout -m RUN_ROOT/3-decoder/weights --size 64
set -euo pipefail
root=${1:-runs/default}
DATA=${DATA:-data} PRESET=${PRESET:-small} SIZE=${SIZE:-64} FRAMES=${FRAMES:-17} BATCH=${BATCH:-4}
IMAGE_STEPS=${IMAGE_STEPS:-2000} VIDEO_STEPS=${VIDEO_STEPS:-2000} DECODER_STEPS=${DECODER_STEPS:-500}
PRECISION=${PRECISION:-fp32} INIT=${INIT:-} VAL_EVERY=${VAL_EVERY:-250} DEVICE=${DEVICE:-auto}
PERCEPTUAL=${PERCEPTUAL:-none} SHORTCUT_PCA=${SHORTCUT_PCA:-0} SCALE_MAX=${SCALE_MAX:-0} LR=${LR:-}
DECODER_LR=${DECODER_LR:-$LR} EMA=${EMA:-0} GAN_WEIGHT=${GAN_WEIGHT:-} FREEZE_SHORTCUT=${FREEZE_SHORTCUT:-0}
HR_SIZE=${HR_SIZE:-0} HR_STEPS=${HR_STEPS:-0} HR_LR=${HR_LR:-$DECODER_LR} REFINER=${REFINER:-0}
PERC_STEPS=${PERC_STEPS:-0} PERC_WEIGHT=${PERC_WEIGHT:-0.02} PERC_LR=${PERC_LR:-$DECODER_LR}
pvvae=${PVVAE:-pvvae}

for d in "$DATA/train" "$DATA/heldout"; do
    [ -d "$d" ] || { echo "train_default: $d is missing; run examples/get_data.sh $DATA first" >&2; exit 2; }
done
# RUN_ROOT/recipe.log: one line per invocation, every setting spelled out, so the run (and the model card that
# benchmarks/ship_model.py writes from it) says exactly how it was made, whatever the defaults become
mkdir -p "$root"
settings=()
for v in OMP_NUM_THREADS DATA PRESET SIZE FRAMES BATCH IMAGE_STEPS VIDEO_STEPS DECODER_STEPS PRECISION INIT VAL_EVERY \
         DEVICE PERCEPTUAL SHORTCUT_PCA SCALE_MAX LR DECODER_LR EMA GAN_WEIGHT FREEZE_SHORTCUT HR_SIZE HR_STEPS HR_LR \
         REFINER PERC_STEPS PERC_WEIGHT PERC_LR; do
    [ -z "${!v:-}" ] || settings+=("$v=$(printf '%q' "${!v}")")
done
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)"$'\n'"${settings[*]} bash examples/train_default.sh $root" >> "$root/recipe.log"
# every stage's options but --perceptual (stage 5 sets its own)
base=(--size "$SIZE" --batch-size "$BATCH" --precision "$PRECISION" --device "$DEVICE" --val-data "$DATA/heldout"
      --val-every "$VAL_EVERY" --ckpt-every "$VAL_EVERY" --scale-max "$SCALE_MAX" --ema-decay "$EMA")
lr=(); [ -z "$LR" ] || lr=(--lr "$LR")
decoder_lr=(); [ -z "$DECODER_LR" ] || decoder_lr=(--lr "$DECODER_LR")
[ -z "$GAN_WEIGHT" ] || base+=(--gan-weight "$GAN_WEIGHT")
[ "$FREEZE_SHORTCUT" = 0 ] || base+=(--freeze-shortcut)
common=("${base[@]}" --perceptual "$PERCEPTUAL")

stage() {  # stage NAME STEPS COMMAND ARGS...: run, or resume an unfinished run, or skip a finished one
    local name=$1 steps=$2 run="$root/$1"
    shift 2
    if [ -f "$run/weights/model.safetensors" ]; then  # a run exports its weights when it finishes
        echo "train_default: $name is finished ($run/weights)"; return
    fi
    if [ -f "$run/train_config.json" ]; then
        "$pvvae" "$1" --resume "$run" --steps "$steps"
    else
        "$pvvae" "$@" --out "$run" --steps "$steps"
    fi
}

if [ -n "$INIT" ]; then start=(--init "$INIT"); else start=(--preset "$PRESET" --refiner "$REFINER"); fi
if [ "$SHORTCUT_PCA" -gt 0 ] && [ -z "$INIT" ]; then
    stage 2-video "$VIDEO_STEPS" train --stage video "${start[@]}" --shortcut-pca "$SHORTCUT_PCA" \
        --data "$DATA/train" --frames "$FRAMES" "${common[@]}" "${lr[@]}"
else
    stage 1-image "$IMAGE_STEPS" train --stage image "${start[@]}" --data "$DATA/train" --data "$DATA/photos" \
        "${common[@]}" "${lr[@]}"
    stage 2-video "$VIDEO_STEPS" train --stage video --init "$root/1-image" --data "$DATA/train" \
        --frames "$FRAMES" "${common[@]}" "${lr[@]}"
fi
stage 3-decoder "$DECODER_STEPS" finetune-decoder --init "$root/2-video" --data "$DATA/train" \
    --frames "$FRAMES" "${common[@]}" "${decoder_lr[@]}"
last=3-decoder
if [ "$HR_STEPS" -gt 0 ] && [ "$HR_SIZE" -gt 0 ]; then
    hr=("${common[@]}")
    hr[1]=$HR_SIZE  # --size
    hr_lr=(); [ -z "$HR_LR" ] || hr_lr=(--lr "$HR_LR")
    stage 4-decoder-hr "$HR_STEPS" finetune-decoder --init "$root/3-decoder" --data "$DATA/train" \
        --frames "$FRAMES" "${hr[@]}" "${hr_lr[@]}"
    last=4-decoder-hr
fi
if [ "$PERC_STEPS" -gt 0 ]; then
    perc_lr=(); [ -z "$PERC_LR" ] || perc_lr=(--lr "$PERC_LR")
    stage 5-decoder-perceptual "$PERC_STEPS" finetune-decoder --init "$root/$last" --data "$DATA/train" \
        --frames "$FRAMES" "${base[@]}" --perceptual stlpips --perceptual-weight "$PERC_WEIGHT" "${perc_lr[@]}"
    last=5-decoder-perceptual
fi
echo "train_default: done; weights in $root/$last/weights"
