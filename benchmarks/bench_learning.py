"""Learning benchmark: PSNR against steps and wall time of each preset overfitting fixed clips, beside the plain
conv autoencoder reference (``pvvae_cli.train.learning.PlainConvAE``), at equal steps and at equal wall time.

Usage: python benchmarks/bench_learning.py [--presets tiny small] [--frames 1 17] [--precisions fp32 bf16]
       [--steps 300] [--clips 4] [--size 64] [--lr PRESET=LR ...] [--threads N] [--shortcut-pca] [--data DIR]

``--shortcut-pca``: the presets get the linear block shortcut (``VAEConfig.linear_shortcut``), fitted by block PCA
on the clips before step 0, as ``pvvae train --shortcut-pca`` does.

Data: ``SyntheticClips("mix", frames=F, size=S, seed=0)`` items 0..clips-1 (the clips of the issue about learning),
or with ``--data DIR`` real clips: the first ``--clips`` windows of ``pvvae eval DIR --windows 2 --size S`` (two
windows per video, short side resized to S and centre-cropped), read as every command reads videos.
Measured (0.7.0, ``--data data/train --presets tiny --frames 17 --steps 300 --no-equal-time``, two threads; the four
windows are two of balle-jbart.mp4 and two of cityCC0.mpg, which 0.6.0 read 12 frames late): tiny 7.08 / 18.01 /
19.69 / 22.38 / 24.58 dB at steps 0 / 50 / 100 / 200 / 300, the reference 10.43 / 18.80 / 20.64 / 22.66 / 23.64.
Each model trains with Adam at a constant learning rate (the preset's default training lr unless ``--lr`` gives
one; the reference uses 1e-3, its best of 3e-4 / 1e-3 / 3e-3 on these clips) on MSE of the deterministic
reconstruction (``decode(encode(x).mode())`` for the VAE). The reference is a per-frame 2-D model: for clips it
gets one latent per frame, 4x the latent numbers of a t4 preset, so it is an easy bar in time.

Printed per (preset, frames, precision): PSNR at steps 0, 50, 100, 200, 300, the preset's training seconds, the
reference's PSNR at the same steps, the reference's PSNR after training as long as the preset did (equal wall
time), and the preset's final PSNR per clip with the clip's kind. Speeds vary between machines; compare only
figures of one run.
"""

from __future__ import annotations

import argparse

import torch


def parse_lrs(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = float(value)
    return out


def real_clips(folder: str, frames: int, size: int, count: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``count`` windows (two per video) of ``pvvae eval FOLDER``'s protocol, and their names."""
    from pvvae_cli.eval.protocol import EvalProtocol

    protocol = EvalProtocol(frames=frames, size=size, windows=2)
    named = [(n, c) for n, c in protocol.clips(protocol.find_videos([folder])) if c is not None][:count]
    return torch.stack([c for _, c in named]), [n for n, _ in named]


def run(preset: str, frames: int, precision: str, steps: int, clips: int, size: int, lr: float | None,
        shortcut_pca: bool = False, equal_time: bool = True, data_dir: str | None = None) -> None:
    from pvvae_cli import VideoVAE
    from pvvae_cli.train.config import default_lr
    from pvvae_cli.train.learning import PlainConvAE, overfit, psnr_db, vae_reconstruct
    from pvvae_cli.train.synthetic import SyntheticClips

    if data_dir is None:
        data = SyntheticClips("mix", frames=frames, size=size, seed=0)
        x = torch.stack([data[i] for i in range(clips)])
        kinds = [data.kind_of(i) for i in range(clips)]
    else:
        x, kinds = real_clips(data_dir, frames, size, clips)
        clips = len(kinds)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    log = [s for s in (0, 50, 100, 200, 300, 500, 1000) if s < steps]
    lr = lr if lr is not None else default_lr(preset)

    torch.manual_seed(0)
    vae = VideoVAE.from_preset(preset, **({"linear_shortcut": True} if shortcut_pca else {})).train()
    if shortcut_pca:
        from pvvae_cli.eval.baselines import BlockPCA

        cfg = vae.config
        vae.init_shortcut_from_pca(BlockPCA.fit([x], cfg.temporal_compression, cfg.spatial_compression,
                                                cfg.latent_channels))
    curve = overfit(vae_reconstruct(vae), vae.parameters(), x, steps, lr, log, dtype)
    vae_seconds = curve[-1].seconds
    with torch.no_grad():
        y = vae_reconstruct(vae)(x)
        per_clip = [psnr_db(y[i : i + 1], x[i : i + 1]) for i in range(clips)]

    torch.manual_seed(0)
    ref = PlainConvAE()
    ref_curve = overfit(ref, ref.parameters(), x, steps, 1e-3, log, dtype)
    # Equal wall time: train a fresh reference for as long as the preset took (steps counted as they come).
    eq = None
    if equal_time:
        torch.manual_seed(0)
        ref2 = PlainConvAE()
        per_step = max(ref_curve[-1].seconds / steps, 1e-6)
        eq = overfit(ref2, ref2.parameters(), x, int(vae_seconds / per_step), 1e-3, (), dtype)[-1]

    ref_params = sum(p.numel() for p in ref.parameters())
    name = f"{preset} + PCA shortcut" if shortcut_pca else preset
    print(f"\n## {name} ({vae.num_parameters():,} params, lr {lr:g}) vs reference ({ref_params:,} params, lr 1e-3): "
          f"{clips} clips x {frames} frames x {size}x{size}, {precision}")
    print("| step | " + " | ".join(str(p.step) for p in curve) + " |")
    print("|---|" + "---|" * len(curve))
    print(f"| {preset} PSNR dB | " + " | ".join(f"{p.psnr:.2f}" for p in curve) + " |")
    print("| reference PSNR dB | " + " | ".join(f"{p.psnr:.2f}" for p in ref_curve) + " |")
    print(f"{preset}: {vae_seconds:.1f} s for {steps} steps; reference: {ref_curve[-1].seconds:.1f} s. "
          + (f"Equal wall time: reference after {eq.step} steps ({eq.seconds:.1f} s): {eq.psnr:.2f} dB"
             if eq is not None else "(equal wall time not run)"))
    each = ", ".join(f"{k} {v:.2f} dB" for k, v in zip(kinds, per_clip, strict=True))
    print(f"{preset} per clip after {steps} steps: {each}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--frames", nargs="+", type=int, default=[1, 17])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", nargs="*", default=[], help="PRESET=LR overrides")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shortcut-pca", action="store_true", help="presets with the PCA-fitted linear shortcut")
    ap.add_argument("--data", default=None, help="a folder of videos: overfit its windows instead of synthetic clips")
    ap.add_argument("--no-equal-time", action="store_true", help="skip the reference at equal wall time (halves "
                    "the run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lrs = parse_lrs(args.lr)
    for preset in args.presets:
        for frames in args.frames:
            for precision in args.precisions:
                run(preset, frames, precision, args.steps, args.clips, args.size, lrs.get(preset), args.shortcut_pca,
                    not args.no_equal_time, args.data)


if __name__ == "__main__":
    main()
