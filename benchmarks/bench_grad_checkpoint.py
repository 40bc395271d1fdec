"""Peak memory of one training step with and without activation checkpointing (issue 27).

Usage: python benchmarks/bench_grad_checkpoint.py [--preset small] [--batch-size 2] [--frames 17] [--size 128]
       [--precision fp32] [--threads 1]

One step = the stage-2 (predictive) forward with nothing dropped (``PredictiveVAE``: encode the whole clip, sample,
decode), MSE + motion + KL losses, backward; random weights (seed 0) and a random clip (seed 0), the same in both
runs. Each setting runs in a fresh subprocess so its memory is its own. Peak memory is the process's maximum
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, i.e. VmHWM), reported in total and above the RSS
measured just before the step (model and input already allocated): torch's CPU allocator returns memory to the OS,
so RSS is the honest measure on the CPU. The losses of the two runs must be equal (checkpointing recomputes the same
values); the script exits non-zero if they differ. ``runtime.memory``'s estimate of the saved activations for the
same step is printed beside them (what the graph keeps at the end of the forward; the peak also holds backward's
transient buffers and, with checkpointing, one block's recomputed activations).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(preset: str, batch: int, frames: int, size: int, precision: str, checkpointing: bool) -> dict:
    import torch

    from pvvae_cli.models.registry import build_model, get_preset
    from pvvae_cli.runtime.device import autocast, resolve_dtype
    from pvvae_cli.train.losses import reconstruction_terms, weighted_sum
    from pvvae_cli.train.objective import PredictiveVAE

    device = torch.device("cpu")
    dtype = resolve_dtype(precision, device)
    torch.manual_seed(0)
    vae = build_model(get_preset(preset)).train()
    vae.set_grad_checkpointing(checkpointing)
    x = torch.rand(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    weights = {"mse": 1.0, "motion": 1.0, "kl": 1e-6}
    base_rss = _rss_mib()
    t0 = time.perf_counter()
    with autocast(device, dtype):
        out = PredictiveVAE(vae)(x, 0, sample=True, generator=torch.Generator().manual_seed(1))
        loss = weighted_sum(reconstruction_terms(out.recon, x, out.posterior, weights), weights)
    del out
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    grad_norm = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in vae.parameters() if p.grad is not None))
    return {"checkpointing": checkpointing, "loss": float(loss), "grad_norm": float(grad_norm), "seconds": seconds,
            "peak_rss_mib": peak, "step_rss_mib": peak - base_rss, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the measured processes")
    ap.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)  # internal: one measurement, JSON
    args = ap.parse_args()

    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.preset, args.batch_size, args.frames, args.size, args.precision,
                                 args.one == "on")))
        return

    import torch

    from pvvae_cli.models.registry import get_preset
    from pvvae_cli.runtime.device import DTYPES
    from pvvae_cli.runtime.memory import estimate_training_memory

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}; preset {args.preset}, batch {args.batch_size}, {args.frames}x{args.size}x"
          f"{args.size}, {args.precision}, one forward + backward, nothing dropped")
    print("| checkpointing | loss | grad norm | step s | peak RSS MiB | RSS growth in the step MiB | "
          "estimated saved activations MiB |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--one", mode, "--preset", args.preset, "--batch-size", str(args.batch_size),
               "--frames", str(args.frames), "--size", str(args.size), "--precision", args.precision,
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the {mode} run failed:\n{proc.stderr}")
        r = results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        est = estimate_training_memory(get_preset(args.preset), args.batch_size, args.frames, args.size, args.size,
                                       DTYPES[args.precision], grad_checkpoint=mode == "on",
                                       loss_weights={"mse": 1.0, "motion": 1.0, "kl": 1e-6})
        print(f"| {mode} | {r['loss']:.8f} | {r['grad_norm']:.8f} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['step_rss_mib']:.0f} | {est.activation_bytes / 2**20:.0f} |", flush=True)
    off, on = results["off"], results["on"]
    print(f"peak RSS with checkpointing: {on['peak_rss_mib'] / off['peak_rss_mib']:.2f}x of without "
          f"(step growth {on['step_rss_mib'] / off['step_rss_mib']:.2f}x); step time "
          f"{on['seconds'] / off['seconds']:.2f}x; load average {os.getloadavg()[0]:.2f} at the end")
    if abs(on["loss"] - off["loss"]) > 1e-5 * abs(off["loss"]):
        sys.exit(f"the losses differ: {on['loss']!r} with checkpointing, {off['loss']!r} without")
    print("losses equal")


if __name__ == "__main__":
    main()
