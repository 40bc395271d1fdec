"""Encode/decode speed, FLOPs and peak memory of pvvae, side by side with diffusers' ``AutoencoderKLWan``.

    python benchmarks/bench_codec.py                       # base preset, 17x128x128, fp32 and bf16
    python benchmarks/bench_codec.py --preset small --size 256 --dtype fp32 --memory-frames 17 65 129

What is measured (random weights for both models: speed and memory do not depend on the weights):

- speed: the streaming path the CLI uses (``Codec.encode_stream``: first frame, then 4-frame chunks with a
  ``StreamState``; ``Codec.decode_stream``: one latent frame at a time) against ``AutoencoderKLWan.encode`` /
  ``.decode`` (default Wan2.1 config; it streams the same way internally) on the same input, same precision,
  same process, runs interleaved; best of ``--repeats`` after one warm-up run. FLOPs are counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one run of each (our direct oneDNN convolution is registered
  with the standard convolution formula), so GFLOP/s = counted FLOPs / best time.
- bf16: ``torch.autocast`` bf16 vs fp32 for our model: speed-up and the PSNR change of the round trip
  (PSNR of decode(encode(x)) vs x, and PSNR of the bf16 round trip vs the fp32 one).
- allocator: like the CLI, the script first calls ``pvvae_cli.runtime.allocator.keep_freed_memory()`` (glibc keeps
  freed blocks instead of unmapping them; process-wide, so it applies to the reference too); pass
  ``--default-allocator`` to measure without it.
- folder: ``run_encode`` (the CLI's runner) over a folder of mp4 clips against the model's time on the same
  clips already in memory: the reader thread should hide reading and decoding behind compute.
- memory: for each clip length, a fresh subprocess writes nothing but runs the real file pipeline:
  ``Codec.encode_file`` (decord reading in chunks) + ``save_latent``, then another one ``load_latent`` +
  ``decode_to_file`` (mp4). Peak = ``VmHWM`` of that process (its peak resident set size, from
  ``/proc/self/status``: the whole process, i.e. Python, torch, the model, decord, the frames; unlike
  ``getrusage``'s ``ru_maxrss`` it is not inherited from the parent across fork/exec); "+model" subtracts
  the peak measured right after building the model, leaving what encoding or decoding itself added.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, register_flop_formula

from pvvae_cli.runtime.allocator import keep_freed_memory


@register_flop_formula(torch.ops.aten.mkldnn_convolution)
def _mkldnn_conv_flop(x_shape, w_shape, bias, padding, stride, dilation, groups, *args, out_shape=None, **kw) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def clip(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, T, size, size) in [-1, 1]: moving sinusoidal patterns plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.stack([torch.sin(11 * xx + 0.3 * t + c) * torch.cos(7 * yy - 0.2 * t) for t in range(frames)
                       for c in range(3)]).view(frames, 3, size, size).transpose(0, 1)
    return (0.8 * out + 0.1 * torch.randn(out.shape, generator=g)).clamp(-1, 1)[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float().clamp(-1, 1) - b.float().clamp(-1, 1)) ** 2).item()
    return 10 * math.log10(4.0 / max(mse, 1e-20))


def load_wan():
    """diffusers' AutoencoderKLWan with its default (Wan2.1) config and random weights."""
    try:
        from diffusers import AutoencoderKLWan
    except RuntimeError as e:  # a torchvision without compiled ops for this torch: define the two it needs
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m.startswith(("torchvision", "diffusers"))]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        from diffusers import AutoencoderKLWan
    torch.manual_seed(0)
    return AutoencoderKLWan().eval()


def count_flops(fn) -> int:
    with torch.inference_mode():
        mode = FlopCounterMode(display=False)
        with mode:
            fn()
    return mode.get_total_flops()


def best_times(fns: dict, repeats: int) -> dict:
    """Interleave the runs (a, b, a, b, ...) so that background load hits every contender alike; best of N."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()  # warm-up (oneDNN primitive creation, allocator)
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def speed(args) -> None:
    from pvvae_cli import VideoVAE
    from pvvae_cli.codec.framing import plan_frames
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.runtime.device import autocast

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    vae = VideoVAE.from_preset(args.preset).eval()
    wan = None if args.no_reference else load_wan()
    x = clip(args.frames, args.size)
    plan = plan_frames(args.frames, args.size, args.size)
    opts = EncodeOptions(tile="off")
    print(f"input (1, 3, {args.frames}, {args.size}, {args.size}); ours: preset {args.preset} "
          f"({vae.num_parameters() / 1e6:.1f} M params, {vae.config.tag})"
          + ("" if wan is None else f"; reference: AutoencoderKLWan default config "
             f"({sum(p.numel() for p in wan.parameters()) / 1e6:.1f} M params, t4s8c16)"))
    print(f"{'model':<10} {'dtype':<5} {'step':<7} {'seconds':>8} {'GFLOP':>9} {'GFLOP/s':>8}")
    recon = {}
    results = {}
    for name in args.dtype:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        codec = Codec(vae, f"preset:{args.preset}", cpu, dtype)
        with torch.inference_mode():
            mean, _ = codec.encode_stream([x[:, :, :1], x[:, :, 1:]], plan, opts)
        z = mean
        fns = {
            ("ours", "encode"): lambda codec=codec: codec.encode_stream([x[:, :, :1], x[:, :, 1:]], plan, opts),
            ("ours", "decode"): lambda codec=codec, z=z: torch.cat(list(codec.decode_stream(z)), 2),
        }
        if wan is not None:
            with torch.inference_mode(), autocast(cpu, dtype):
                zw = wan.encode(x).latent_dist.mode()

            def wan_enc(dtype=dtype):
                with autocast(cpu, dtype):
                    return wan.encode(x).latent_dist.mode()

            def wan_dec(dtype=dtype, zw=zw):
                with autocast(cpu, dtype):
                    return wan.decode(zw).sample

            fns[("wan", "encode")] = wan_enc
            fns[("wan", "decode")] = wan_dec
        flops = {k: count_flops(fn) for k, fn in fns.items()}
        secs = best_times(fns, args.repeats)
        for (model, step), s in secs.items():
            results[(model, name, step)] = (s, flops[(model, step)])
            print(f"{model:<10} {name:<5} {step:<7} {s:8.3f} {flops[(model, step)] / 1e9:9.1f} "
                  f"{flops[(model, step)] / s / 1e9:8.1f}", flush=True)
        with torch.inference_mode():
            recon[name] = torch.cat(list(codec.decode_stream(z)), 2)
    for model in ("ours", "wan"):
        for step in ("encode", "decode"):
            if ("fp32" in args.dtype and "bf16" in args.dtype and (model, "fp32", step) in results):
                a, b = results[(model, "fp32", step)][0], results[(model, "bf16", step)][0]
                print(f"{model} {step}: bf16 autocast is {a / b:.2f}x faster than fp32")
    if "fp32" in recon and "bf16" in recon:
        p32, p16 = psnr(recon["fp32"], x), psnr(recon["bf16"], x)
        print(f"ours round trip PSNR vs input: fp32 {p32:.3f} dB, bf16 {p16:.3f} dB, change {p16 - p32:+.3f} dB; "
              f"bf16 vs fp32 output: {psnr(recon['bf16'], recon['fp32']):.1f} dB (random weights)")


# ---------------------------------------------------------------------------------------------- memory
def peak_rss_kib() -> int:
    """Peak resident set size of this process (``VmHWM``), KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _memory_child(mode: str, preset: str, video: str, work: str) -> None:
    """Runs in a fresh process: one encode or decode of a file through the real pipeline; prints JSON."""
    from pvvae_cli import VideoVAE
    from pvvae_cli.codec.latents import load_latent, save_latent
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions

    torch.manual_seed(0)
    codec = Codec(VideoVAE.from_preset(preset).eval(), f"preset:{preset}", torch.device("cpu"), torch.float32)
    base = peak_rss_kib()
    latent_path = Path(work) / "clip.safetensors"
    t0 = time.perf_counter()
    if mode == "encode":
        enc = codec.encode_file(video, EncodeOptions())
        save_latent(latent_path, enc.latent, enc.meta)
        frames = enc.meta.num_frames
    else:
        latent, meta = load_latent(latent_path)
        frames = codec.decode_to_file(latent, meta, Path(work) / "out.mp4")
    peak = peak_rss_kib()
    print(json.dumps({"base_kib": base, "peak_kib": peak, "frames": frames, "seconds": time.perf_counter() - t0}))


def memory(args) -> None:
    import numpy as np

    from pvvae_cli.media.writer import write_video

    print(f"\npeak memory (VmHWM = peak RSS of a fresh process, MiB; '+model' = increase over the peak right "
          f"after building the model), preset {args.preset}, {args.memory_size}x{args.memory_size}, fp32, "
          "file -> latent -> mp4")
    print(f"{'frames':>6} {'encode peak':>12} {'+model':>8} {'decode peak':>12} {'+model':>8}")
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        for n in args.memory_frames:
            video = Path(work) / f"clip{n}.mp4"
            x = clip(n, args.memory_size)[0]
            write_video(video, ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy().astype(np.uint8),
                        fps=24)
            out = {}
            for mode in ("encode", "decode"):
                cmd = [sys.executable, __file__, "--_child", mode, "--preset", args.preset, "--_video", str(video),
                       "--_work", work] + (["--default-allocator"] if args.default_allocator else [])
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
                assert out[mode]["frames"] == n, out[mode]
            rows[n] = out
            e, d = out["encode"], out["decode"]
            print(f"{n:>6} {e['peak_kib'] / 1024:12.0f} {(e['peak_kib'] - e['base_kib']) / 1024:8.0f} "
                  f"{d['peak_kib'] / 1024:12.0f} {(d['peak_kib'] - d['base_kib']) / 1024:8.0f}", flush=True)
    lo, hi = min(rows), max(rows)
    for mode in ("encode", "decode"):
        ratio = rows[hi][mode]["peak_kib"] / rows[lo][mode]["peak_kib"]
        print(f"{mode}: peak at {hi} frames / peak at {lo} frames = {ratio:.3f}")


# ---------------------------------------------------------------------------------------------- folder
def folder(args) -> None:
    """``run_encode`` over a folder of mp4 clips (reader thread decoding ahead) vs the model's own time on the
    same clips already decoded into tensors: how much of the I/O is hidden behind compute."""
    import numpy as np

    from pvvae_cli import VideoVAE
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.runner import run_encode
    from pvvae_cli.media.discovery import expand_inputs, plan_jobs
    from pvvae_cli.media.writer import write_video

    torch.manual_seed(0)
    codec = Codec(VideoVAE.from_preset(args.preset).eval(), f"preset:{args.preset}", torch.device("cpu"),
                  torch.float32)
    n, t, size = args.folder_clips, args.frames, args.size
    with tempfile.TemporaryDirectory() as work:
        tensors = []
        for i in range(n):
            x = clip(t, size, seed=i)[0]
            frames = ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy().astype(np.uint8)
            write_video(Path(work) / "clips" / f"c{i}.mp4", frames, fps=24)
            tensors.append(x)
        opts = EncodeOptions(tile="off")
        source = codec.plan_source(Path(work) / "clips" / "c0.mp4", opts)
        with torch.inference_mode():
            codec.encode_stream([tensors[0][None]], source.plan, opts)  # warm-up
            t0 = time.perf_counter()
            for x in tensors:
                codec.encode_stream([x[None, :, :1], x[None, :, 1:]], source.plan, opts)
            model_s = time.perf_counter() - t0
        files, _ = expand_inputs([str(Path(work) / "clips")], frozenset({".mp4"}))
        jobs, _ = plan_jobs(files, Path(work) / "lat", lambda _: ".safetensors")
        t0 = time.perf_counter()
        outcomes = run_encode(codec, jobs, opts, quiet=True)
        wall_s = time.perf_counter() - t0
    assert all(o.status == "encoded" for o in outcomes)
    print(f"\nfolder of {n} mp4 clips ({t}x{size}x{size}), preset {args.preset}, fp32: run_encode wall "
          f"{wall_s:.2f} s (read + decode + encode + write) vs model compute alone {model_s:.2f} s "
          f"(ratio {wall_s / model_s:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-reference", action="store_true", help="skip diffusers' AutoencoderKLWan")
    p.add_argument("--memory-frames", type=int, nargs="*", default=[17, 65, 129])
    p.add_argument("--memory-size", type=int, default=128)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--folder-clips", type=int, default=8, help="clips for the folder test (0: skip it)")
    p.add_argument("--default-allocator", action="store_true", help="do not call allocator.keep_freed_memory()")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_video", help=argparse.SUPPRESS)
    p.add_argument("--_work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.default_allocator:
        keep_freed_memory()  # as the CLI does; process-wide, so it applies to the reference model alike
    if args._child:
        _memory_child(args._child, args.preset, args._video, args._work)
        return
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, {os.cpu_count()} cores")
    if not args.skip_speed:
        speed(args)
    if args.folder_clips:
        folder(args)
    if args.memory_frames:
        memory(args)


if __name__ == "__main__":
    main()
