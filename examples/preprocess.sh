#!/usr/bin/env bash
# A dataset pipeline: every video under SRC -> one latent file each under OUT (the tree mirrored), encoded by
# JOBS parallel `pvvae encode --shard I/JOBS` processes, then one manifest and one list of failures.
#
# Usage: examples/preprocess.sh SRC OUT [JOBS]        (JOBS: default the number of CPU cores, at most 4)
# Settings (environment): MODEL= (default: the shipped model) ENCODE_ARGS="" (more `pvvae encode` options, e.g.
#   "--max-size 512 --frames 65"), THREADS= (torch threads per process; default cores / JOBS), GPUS= (GPUs to
#   spread the JOBS over, encoder I on cuda:(I % GPUS); default: those visible, 0 for the CPU)
#
# Writes OUT/**.safetensors, OUT/manifest.jsonl (one line per latent: input, output, shape, fps, sizes),
# OUT/failures.txt ("path: reason" per input that could not be encoded) and OUT/logs/shard-I.log.
# Re-running resumes: latents already up to date are skipped, so an interrupted or partly failed run can just be
# started again. Exit code 0 when every input was encoded, 1 when some failed (listed), 2 on a usage error.
#
# On a cluster, run the same `pvvae encode ... --shard auto` as one task per node/GPU of a job array (Slurm) or
# under torchrun: each process takes its shard from the scheduler's environment (see README, "Sharding").
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
src=$1 out=$2
cores=$(nproc)
jobs=${3:-$(( cores < 4 ? cores : 4 ))}
[ "$jobs" -ge 1 ] 2>/dev/null || { echo "preprocess: JOBS must be a positive integer, got '$jobs'" >&2; exit 2; }
[ -e "$src" ] || { echo "preprocess: $src: no such file or folder" >&2; exit 2; }
threads=${THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}
model=(); [ -z "${MODEL:-}" ] || model=(--model "$MODEL")
read -r -a extra <<< "${ENCODE_ARGS:-}"
pvvae=${PVVAE:-pvvae}

# One GPU per encoder: without a device each process would take cuda:0. The GPUs visible to this shell:
# CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists (none without an NVIDIA driver: the CPU path).
count_gpus() {
    if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
        local ids; IFS=, read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
        local n=0 id
        for id in "${ids[@]}"; do
            if [ "$id" = "-1" ]; then break; elif [ -n "$id" ]; then n=$((n + 1)); fi  # -1 ends the list
        done
        echo "$n"
    elif command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true
    else
        echo 0
    fi
}
ngpu=${GPUS:-$(count_gpus)}
[ "$ngpu" -ge 0 ] 2>/dev/null || { echo "preprocess: GPUS must be an integer >= 0, got '$ngpu'" >&2; exit 2; }
pinned=0  # a device given in ENCODE_ARGS (or PVVAE_DEVICE, what --device auto means) is the user's choice
for arg in "${extra[@]}"; do case $arg in --device|--device=*) pinned=1 ;; esac; done
case ${PVVAE_DEVICE:-auto} in auto|cuda) ;; *) pinned=1 ;; esac

mkdir -p "$out/logs"
pids=()
for ((i = 0; i < jobs; i++)); do
    device=(); [ "$ngpu" -eq 0 ] || [ "$pinned" -eq 1 ] || device=(--device "cuda:$((i % ngpu))")
    OMP_NUM_THREADS=$threads "$pvvae" encode "$src" -o "$out" --shard "$i/$jobs" --manifest "$out/manifest.jsonl" \
        --quiet "${model[@]}" "${device[@]}" "${extra[@]}" 2> "$out/logs/shard-$i.log" &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then :; else
        rc=$?
        [ "$rc" -eq 1 ] || { echo "preprocess: shard $i/$jobs stopped (exit $rc):" >&2; tail -n 3 "$out/logs/shard-$i.log" >&2; }
        status=1
    fi
done

# One manifest from the shards' (each written atomically by its process), one list of failures.
shards=("$out"/manifest.shard-*-of-*"$jobs".jsonl)
if [ -e "${shards[0]}" ]; then
    tmp=$(mktemp "$out/.manifest.XXXXXXXX")
    sort "${shards[@]}" > "$tmp" && mv "$tmp" "$out/manifest.jsonl" && rm -f "${shards[@]}"
fi
grep -h '^failed: ' "$out"/logs/shard-*.log | sed 's/^failed: //' > "$out/failures.txt" || true
encoded=$( [ -f "$out/manifest.jsonl" ] && wc -l < "$out/manifest.jsonl" || echo 0)
failed=$(wc -l < "$out/failures.txt")
echo "preprocess: $encoded latent file(s) in $out (manifest.jsonl), $failed failure(s) (failures.txt)"
[ "$failed" -eq 0 ] || { head -n 5 "$out/failures.txt" | sed 's/^/  /'; status=1; }
exit $status
