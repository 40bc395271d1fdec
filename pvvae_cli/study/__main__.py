"""``python -m pvvae_cli.study``: run the diffusability study (``study.diffusability``) and write its report.

Thin: parses, builds a ``StudyConfig`` from a scale plus overrides, calls ``run_study`` and ``write_report``.
User errors print one line and exit 2. ``examples/diffusability/run.sh`` fetches the digits and calls this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvvae_cli.errors import PvvaeError
from pvvae_cli.study.config import SCALES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pvvae_cli.study", description=(
        "Diffusability study: a reconstruction-only VAE vs a predictive VAE, the same latent DiT on each, "
        "generation metrics logged every --eval-every DiT steps, over several seeds."))
    p.add_argument("--digits", type=Path, required=True, help="mnist_5k.csv.gz (run.sh fetches it)")
    p.add_argument("--out", type=Path, required=True, help="study folder (data, runs, results.json); rerunning "
                   "into it reuses finished phases")
    p.add_argument("--report", type=Path, default=Path("docs/diffusability"),
                   help="where results.md and the PNGs go (default: docs/diffusability)")
    p.add_argument("--scale", choices=sorted(SCALES), default="default",
                   help="smoke: a minute or two, a pipeline check; default: well under 2 h on 2 CPU cores; large: "
                        "a GPU or a night")
    p.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: the scale's)")
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--decoder-steps", type=int)
    p.add_argument("--gen-steps", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-samples", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default auto: the faster one here")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD/KVD (no I3D needed)")
    a = p.parse_args(argv)
    from pvvae_cli.gen.plot import have_matplotlib
    from pvvae_cli.study.diffusability import run_study
    from pvvae_cli.study.report import write_report

    if not have_matplotlib():  # the plots come at the end: say so before an hour of training
        print("error: the report's plots need matplotlib: pip install matplotlib (or the plot extra)", file=sys.stderr)
        return 2

    overrides = {k: v for k, v in dict(vae_steps=a.vae_steps, decoder_steps=a.decoder_steps, gen_steps=a.gen_steps,
                                       eval_every=a.eval_every, eval_samples=a.eval_samples, device=a.device,
                                       precision=a.precision).items() if v is not None}
    if a.seeds is not None:
        overrides["seeds"] = tuple(range(a.seeds))
    try:
        cfg = SCALES[a.scale].replace(**overrides)
        results = run_study(cfg, a.digits, a.out, features=None if a.no_fvd else "i3d")
        written = write_report(results, a.out, a.report)
    except PvvaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
