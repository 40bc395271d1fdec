"""Training step time and peak memory of the stage-2 (predictive) objective (issue 5).

Usage: python benchmarks/bench_train.py [--presets tiny small] [--sizes 64 128] [--frames 17]
       [--precisions fp32 bf16] [--batch-size 1] [--dropped 0] [--warmup 2] [--steps 5] [--gan] [--threads N]

One step = what `pvvae train --stage video` does per optimiser update: encode the kept prefix (``--dropped``
trailing groups dropped; 0 = the whole clip, the most expensive case), append padding latents, decode the
full clip, MSE + motion + KL losses, backward, gradient clipping, AdamW. ``--gan`` adds the generator's
adversarial term (with its adaptive balance) and one discriminator update (64-channel 3D patch discriminator),
as from --gan-start-step on. Random weights and synthetic clips (timing only). CPU.

Each (preset, size, precision) runs in a fresh subprocess so its memory is its own. Peak memory is the
process's maximum resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), reported in total and
above the RSS measured just before the first step (model, optimiser and input already allocated): torch's
CPU allocator returns memory to the OS, so RSS is the honest measure on the CPU. Step time: mean and min over
``--steps`` timed steps after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(preset: str, size: int, frames: int, precision: str, batch: int, dropped: int, warmup: int, steps: int,
            gan: bool) -> dict:
    import torch

    from pvvae_cli import VideoVAE
    from pvvae_cli.runtime.device import autocast, resolve_device, resolve_dtype
    from pvvae_cli.train.discriminator import PatchDiscriminator3D
    from pvvae_cli.train.losses import (
        adaptive_gan_weight,
        generator_adv_loss,
        hinge_d_loss,
        reconstruction_terms,
        weighted_sum,
    )
    from pvvae_cli.train.objective import PredictiveVAE
    from pvvae_cli.train.synthetic import SyntheticClips

    device = resolve_device("cpu")
    dtype = resolve_dtype(precision, device)
    torch.manual_seed(0)
    vae = VideoVAE.from_preset(preset).train()
    model = PredictiveVAE(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-5)
    disc = PatchDiscriminator3D() if gan else None
    disc_opt = torch.optim.AdamW(disc.parameters(), lr=5e-5, betas=(0.5, 0.9)) if gan else None
    data = SyntheticClips("mix", frames=frames, size=size, seed=0)
    x = torch.stack([data[i] for i in range(batch)])
    weights = {"mse": 1.0, "motion": 1.0, "kl": 1e-6}
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with autocast(device, dtype):
            out = model(x, dropped, sample=True, generator=gen)
            terms = reconstruction_terms(out.recon, x, out.posterior, weights)
            loss = weighted_sum(terms, weights)
            if gan:
                disc.requires_grad_(False)
                g_adv = generator_adv_loss(disc(out.recon))
                loss = loss + 0.2 * adaptive_gan_weight(loss, g_adv, vae.decoder.conv_out.weight) * g_adv
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if gan:
            disc.requires_grad_(True)
            with autocast(device, dtype):
                logits = disc(torch.cat([x, out.recon.detach()]))
                d_loss = hinge_d_loss(logits[:batch], logits[batch:])
            d_loss.backward()
            disc_opt.step()
            disc_opt.zero_grad(set_to_none=True)

    base_rss = _rss_mb()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"preset": preset, "params": vae.num_parameters(), "input": f"{batch}x{frames}x{size}x{size}",
            "precision": precision, "mean_s": sum(times) / len(times), "min_s": min(times),
            "peak_rss_mb": peak, "step_rss_mb": peak - base_rss, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--dropped", type=int, default=0, help="trailing 4-frame groups dropped (0 = encode all)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gan", action="store_true", help="include the adversarial loss and a discriminator update")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    args = ap.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        preset, size, precision = args.one.split(",")
        print(json.dumps(measure(preset, int(size), args.frames, precision, args.batch_size, args.dropped,
                                 args.warmup, args.steps, args.gan)))
        return

    import torch

    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}, load average "
          f"{load[0]:.2f} at start; stage-2 step, batch {args.batch_size}, dropped groups {args.dropped}, "
          f"GAN {'on' if args.gan else 'off'}; {args.warmup} warm-up + {args.steps} timed steps")
    print("| preset | params | input (BxTxHxW) | precision | step s (mean) | step s (min) | peak RSS MiB | "
          "RSS growth in steps MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for size in args.sizes:
            for precision in args.precisions:
                cmd = [sys.executable, __file__, "--one", f"{preset},{size},{precision}", "--frames",
                       str(args.frames), "--batch-size", str(args.batch_size), "--dropped", str(args.dropped),
                       "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
                cmd += ["--gan"] if args.gan else []
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"| {preset} | | {size} | {precision} | failed: {proc.stderr.strip().splitlines()[-1]} "
                          "| | | |", flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"| {r['preset']} | {r['params']:,} | {r['input']} | {r['precision']} | {r['mean_s']:.3f} | "
                      f"{r['min_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} |", flush=True)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} at the end (other processes on this machine slow the figures down)")


if __name__ == "__main__":
    main()
