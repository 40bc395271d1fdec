"""Wan VAE: pvvae's implementation vs diffusers' ``AutoencoderKLWan`` on identical weights and input (issue 16).

Usage: python benchmarks/bench_wan.py [--arch wan2.1 wan2.2] [--sizes 128x128] [--frames 9 17]
       [--dtypes fp32 bf16] [--device cpu|cuda] [--repeats 1]

For each case: encode and decode seconds of both (best of ``--repeats`` after one warm-up; on the CPU the
process's CPU time, on CUDA wall time), the max abs difference of their outputs, and peak memory. Every
(implementation, case) runs in its own process, so peak memory is that process's (CPU: peak resident set size,
which includes loading the weights and the Python runtime; CUDA: peak allocated). pvvae encodes and decodes in one
pass (``--ours-streamed`` times the codec's streaming path instead: first frame, then 4-frame chunks / one latent
frame at a time); diffusers always streams so (its only mode). Random weights from diffusers' default init, shared
through a diffusers folder written once.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pvvae_cli.models.wan.config import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD

DIFFUSERS_CONFIGS = {
    "wan2.1": {},
    "wan2.2": dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
                   patch_size=2, scale_factor_spatial=16, latents_mean=list(WAN22_LATENTS_MEAN),
                   latents_std=list(WAN22_LATENTS_STD)),
}


def import_wan():
    try:
        from diffusers import AutoencoderKLWan
    except RuntimeError as e:  # torchvision without compiled ops for this torch (see metrics/perceptual.py)
        if "torchvision::" not in str(e):
            raise
        from pvvae_cli.metrics.perceptual import shim_torchvision

        shim_torchvision("diffusers")
        from diffusers import AutoencoderKLWan
    return AutoencoderKLWan


def worker(args) -> None:
    """One implementation, one case: print a JSON line of timings, outputs saved for the parent to compare."""
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    x = (torch.rand(1, 3, args.frames[0], h, w) * 2 - 1).to(device)
    if args.impl == "diffusers":
        model = import_wan().from_pretrained(args.folder).to(device).eval()
        enc = lambda v: model.encode(v).latent_dist.mean  # noqa: E731
        dec = lambda z: model.decode(z).sample  # noqa: E731
    else:
        from pvvae_cli.models.registry import load_model

        model = load_model(args.folder, device=device)
        if args.streamed:
            def enc(v):
                stream = model.new_stream()
                parts = [model.encode_chunk(v[:, :, :1], stream).mean]
                parts += [model.encode_chunk(v[:, :, i : i + 4], stream).mean for i in range(1, v.shape[2], 4)]
                return torch.cat(parts, dim=2)

            def dec(z):
                stream = model.new_stream()
                out = torch.cat([model.decode_chunk(z[:, :, i : i + 1], stream) for i in range(z.shape[2])], 2)
                return out.clamp(-1, 1)  # diffusers clamps
        else:
            enc = lambda v: model.encode(v).mean  # noqa: E731
            dec = lambda z: model.decode(z).clamp(-1, 1)  # noqa: E731  (diffusers clamps)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # CPU: process CPU time, not wall time: on a shared machine the wall time is mostly waiting for a core (the
    # build machine's load average was ~11 on 2 cores), while CPU time counts the work (all threads summed).
    clock = time.perf_counter if device.type == "cuda" else time.process_time

    def best(fn, *a):
        out, t_best = None, float("inf")
        for _ in range(args.repeats):
            sync()
            t0 = clock()
            out = fn(*a)
            sync()
            t_best = min(t_best, clock() - t0)
        return out, t_best

    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        z = enc(x)  # warm-up
        dec(z)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        z, t_enc = best(enc, x)
        y, t_dec = best(dec, z.float())
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    torch.save({"z": z.float().cpu(), "y": y.float().cpu()}, args.out)
    print(json.dumps({"encode_s": t_enc, "decode_s": t_dec, "peak_bytes": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["wan2.1"], choices=sorted(DIFFUSERS_CONFIGS))
    ap.add_argument("--sizes", nargs="+", default=["128x128"], help="HxW")
    ap.add_argument("--frames", nargs="+", type=int, default=[9])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--ours-streamed", action="store_true", help="time pvvae's streaming path instead of one pass")
    # worker mode (internal)
    ap.add_argument("--impl", choices=["ours", "diffusers"])
    ap.add_argument("--folder")
    ap.add_argument("--size")
    ap.add_argument("--dtype")
    ap.add_argument("--out")
    ap.add_argument("--streamed", action="store_true")
    args = ap.parse_args()
    if args.impl:
        return worker(args)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, best of "
          f"{args.repeats}; ours {'streamed' if args.ours_streamed else 'one pass'}")
    print("| arch | input | dtype | encode max abs diff | decode max abs diff | ours enc s | diffusers enc s "
          "| ours dec s | diffusers dec s | speed-up enc+dec | ours peak MiB | diffusers peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            torch.manual_seed(0)
            folder = Path(tmp) / arch
            import_wan()(**DIFFUSERS_CONFIGS[arch]).save_pretrained(folder)
            for size in args.sizes:
                for frames in args.frames:
                    for dtype in args.dtypes:
                        res = {}
                        for impl in ("ours", "diffusers"):
                            out = Path(tmp) / f"{impl}.pt"
                            cmd = [sys.executable, __file__, "--impl", impl, "--folder", str(folder), "--size", size,
                                   "--frames", str(frames), "--dtype", dtype, "--device", args.device,
                                   "--repeats", str(args.repeats), "--out", str(out)]
                            if args.ours_streamed:
                                cmd.append("--streamed")
                            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                            res[impl] = json.loads(line.strip().splitlines()[-1]) | torch.load(out)
                        o, d = res["ours"], res["diffusers"]
                        dz = (o["z"] - d["z"]).abs().max().item()
                        dy = (o["y"] - d["y"]).abs().max().item()
                        speed = (d["encode_s"] + d["decode_s"]) / (o["encode_s"] + o["decode_s"])
                        print(f"| {arch} | {frames}x{size} | {dtype} | {dz:.2e} | {dy:.2e} | {o['encode_s']:.2f} "
                              f"| {d['encode_s']:.2f} | {o['decode_s']:.2f} | {d['decode_s']:.2f} | {speed:.2f}x "
                              f"| {o['peak_bytes'] / 2**20:.0f} | {d['peak_bytes'] / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
