"""Experiment (issue 13): how much a shortcut model's network adds to its linear block shortcut. For a model with the
PCA-fitted shortcut (``--shortcut-pca``), print the RMS of the decoder's network output (everything but the
shortcut's pixels) next to the RMS of the shortcut's own reconstruction error, on held-out windows at 64².

    python benchmarks/exp_network_share.py WEIGHTS_OR_CHECKPOINT [--heldout data/heldout]

A checkpoint (``RUN/checkpoints/step_*.pt``) is read with ``torch.load(weights_only=True)`` into the ``small``
preset with the shortcut. Before 0.7.0, on partly misread clips (CHANGELOG 0.7.0; relative figures only):
measured at step 200 of a decoder fine-tune on the PCA encoder (``finetune-decoder``,
frozen shortcut fitted on 256 crops, 64² crops, batch 2): network output RMS 0.0012 (lr 1e-3) and 0.0010 (lr 3e-4)
against a shortcut error RMS of 0.114 (pixels in [-1, 1]): the network has learnt next to nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_baselines import windows  # this script's folder is on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--heldout", default="data/heldout")
    ap.add_argument("--preset", default="small")
    args = ap.parse_args()

    from pvvae_cli import VideoVAE, load_model

    if Path(args.weights).is_file():
        state = torch.load(args.weights, map_location="cpu", weights_only=True)["model"]
        vae = VideoVAE.from_preset(args.preset, linear_shortcut=True)
        vae.load_state_dict({k.removeprefix("vae."): v for k, v in state.items()})
    else:
        vae = load_model(args.weights)
    vae.eval()
    net, err = [], []
    with torch.no_grad():
        for x in windows(args.heldout, 17, 4, 64):
            z = vae.encode(x[None]).mode()
            linear = vae.decoder.shortcut(z)
            net.append((vae.decode(z) - linear).pow(2).mean())
            err.append((linear - x[None]).pow(2).mean())
    rms = lambda v: float(torch.stack(v).mean().sqrt())  # noqa: E731
    print(f"decoder network output RMS {rms(net):.4f}; shortcut reconstruction error RMS {rms(err):.4f}")


if __name__ == "__main__":
    main()
