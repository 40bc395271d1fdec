"""Achieved GFLOP/s of the training step against inference, per precision and memory format (issue 13).

Usage: python benchmarks/bench_throughput.py [--preset small] [--size 64] [--frames 17] [--batch-size 2]
       [--steps 3] [--threads 0] [--formats contiguous channels_last]

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one call (convolutions and
matrix products, forward and backward; elementwise work is not counted, so it shows up as lower GFLOP/s).
- inference: ``decode(encode(x).mode())`` under ``no_grad`` (the models' inference path calls oneDNN's
  convolution directly, which the counter does not see, so its FLOPs are counted on the differentiable path);
- training: what ``pvvae train --stage video`` does per step with nothing dropped (the most expensive case):
  predictive forward with a posterior sample, MSE + motion + KL, backward, gradient clipping, AdamW;
- conv: one 3x3x3 convolution of the model's widest full-resolution shape, forward (+ backward): what the
  machine's convolution kernels reach, the ceiling for the rest.
Each row: GFLOP per call, seconds per call (minimum of ``--steps`` after one warm-up), GFLOP/s, and training
GFLOP/s as a fraction of inference GFLOP/s at the same precision and format. All rows come from the same
process and run, so they compare with each other; another run on another machine (or a busy one) will differ.
"""

from __future__ import annotations

import argparse
import os

from bench_presets import timed as fastest  # this script's folder is on sys.path


def timed(fn, steps: int) -> float:
    fn()  # warm-up: kernel selection, allocator
    return fastest(fn, steps)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(preset: str, fmt: str, precision: str, x0, steps: int) -> None:
    """Print the four rows of one (precision, memory format)."""
    import torch

    from pvvae_cli import VideoVAE
    from pvvae_cli.runtime.device import DTYPES, autocast
    from pvvae_cli.train.losses import reconstruction_terms, weighted_sum
    from pvvae_cli.train.objective import PredictiveVAE

    cpu = torch.device("cpu")
    weights = {"mse": 1.0, "motion": 1.0, "kl": 1e-6}
    batch, _, frames, size, _ = x0.shape
    dtype = DTYPES[precision]
    torch.manual_seed(0)
    vae = VideoVAE.from_preset(preset)
    x = x0
    if fmt == "channels_last":
        for m in vae.modules():  # the 3-D convolutions' weights (the attention's 2-D ones stay as they are)
            if isinstance(m, torch.nn.Conv3d):
                m.to(memory_format=torch.channels_last_3d)
        x = x0.contiguous(memory_format=torch.channels_last_3d)
    model = PredictiveVAE(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def infer():
        with torch.no_grad(), autocast(cpu, dtype):
            vae.decode(vae.encode(x).mode())

    def infer_counted():  # the same convolutions through the differentiable path, which the counter sees
        with autocast(cpu, dtype):
            vae.decode(vae.encode(x).mode())

    def train_step():
        with autocast(cpu, dtype):
            out = model(x, 0, sample=True, generator=gen)
            loss = weighted_sum(reconstruction_terms(out.recon, x, out.posterior, weights), weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    width = vae.config.base_channels * vae.config.channel_multipliers[0]
    conv = torch.nn.Conv3d(width, width, 3, padding=(0, 1, 1))
    c_in = torch.randn(batch, width, frames + 2, size, size)
    if fmt == "channels_last":
        conv = conv.to(memory_format=torch.channels_last_3d)
        c_in = c_in.contiguous(memory_format=torch.channels_last_3d)
    c_grad = c_in.clone().requires_grad_(True)

    def conv_fwd():
        with torch.no_grad(), autocast(cpu, dtype):
            conv(c_in)

    def conv_fwd_bwd():
        with autocast(cpu, dtype):
            y = conv(c_grad)
        y.float().sum().backward()

    rates = {}
    counted = {"inference": infer_counted}
    for name, fn in (("conv fwd", conv_fwd), ("conv fwd+bwd", conv_fwd_bwd), ("inference", infer),
                     ("training step", train_step)):
        flops = count_flops(counted.get(name, fn))
        seconds = timed(fn, steps)
        rates[name] = flops / seconds / 1e9
        ratio = f"{rates[name] / rates['inference']:.2f}" if name == "training step" else ""
        print(f"| {name} | {precision} | {fmt} | {flops / 1e9:.1f} | {seconds:.3f} | {rates[name]:.1f} | "
              f"{ratio} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"],
                    choices=["contiguous", "channels_last"])
    args = ap.parse_args()

    import torch

    from pvvae_cli.runtime.device import cpu_bf16_speedup
    from pvvae_cli.train.synthetic import SyntheticClips

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.2f}; preset {args.preset}, {args.batch_size}x{args.frames}x{args.size}x{args.size}; "
          f"probe (runtime.device.cpu_bf16_speedup): bf16 at {cpu_bf16_speedup():.2f}x fp32")
    print("| what | precision | format | GFLOP/call | s/call | GFLOP/s | training / inference |")
    print("|---|---|---|---|---|---|---|")
    data = SyntheticClips("mix", frames=args.frames, size=args.size, seed=0)
    x0 = torch.stack([data[i] for i in range(args.batch_size)])
    for fmt in args.formats:
        for precision in args.precisions:
            measure(args.preset, fmt, precision, x0, args.steps)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
