#!/usr/bin/env bash
# GPU smoke and speed check of pvvae (issue 27); the steps and what they measure are in gpu_smoke.py.
# Usage: bash benchmarks/gpu_smoke.sh [--device cuda|cpu] [--quick] [--out DIR] [--budget SECONDS]
# Runs the python of the active environment (or $PYTHON); exits non-zero if any step failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/gpu_smoke.py" "$@"
