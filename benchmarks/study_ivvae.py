"""Causal (PV-VAE) vs group-causal + keyframe (IV-VAE) at equal CPU budget, with and without the predictive
objective: train each on the same synthetic data for the same steps (same latent size), then measure
reconstruction PSNR/SSIM, first-frame vs later-frame PSNR, prediction PSNR vs copy-last-frame, and encode/decode
time (and ST-LPIPS where the metric's weights are set up: ``pvvae setup-metrics``). Writes the table to
``docs/ivvae-study.md`` (and the raw numbers as JSON beside the runs).

    python benchmarks/study_ivvae.py --steps 300 --out runs/ivvae-study                    # tiny, synthetic
    python benchmarks/study_ivvae.py --scale small --data data --frames 17 --size 64 \
        --context 9 --steps 300 --out runs/ivvae-study-small --doc docs/ivvae-study-small.md  # small, real clips
    # or in parallel: --only small ivvae-small & --only gcconv-small, then the line without --only writes the table

``--scale`` picks the three models (PV-VAE preset, the GCConv-only ablation at about the same parameter count,
the IV-VAE preset); ``--data DIR`` trains on ``DIR/train`` and scores ``--windows`` 17-frame windows per clip of
``DIR/heldout`` (``examples/get_data.sh``), else synthetic ``mix`` clips. Each model trains at its preset's
default learning rate (``train.config.DEFAULT_LR``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from pvvae_cli import load_model
from pvvae_cli.codec.prediction import predict_future, score_prediction
from pvvae_cli.metrics.image import psnr_frames, ssim
from pvvae_cli.models.ivvae.config import PRESETS
from pvvae_cli.models.ivvae.model import IVVAE
from pvvae_cli.runtime.device import resolve_training_dtype
from pvvae_cli.train.config import build_config
from pvvae_cli.train.synthetic import SyntheticClips
from pvvae_cli.train.trainer import train

# The three models of each scale: PV-VAE preset, GCConv-only ablation, IV-VAE preset. The ablation is the IV-VAE
# preset without keyframe compression at the width that gives about the same parameter count (tiny: 5 instead of
# 6, 294 k vs 303 k; small: 20 instead of 24, 14.0 M vs 14.7 M, PV-VAE small 15.3 M); it has no preset, so it
# starts from a saved random init at the IV-VAE preset's lr.
SCALES = {"tiny": ("tiny", "gcconv-tiny", "ivvae-tiny"), "small": ("small", "gcconv-small", "ivvae-small")}
GCCONV_WIDTH = {"gcconv-tiny": 5, "gcconv-small": 20}
ARCH = {"tiny": "PV-VAE (causal conv)", "gcconv-tiny": "GCConv (no KTC)", "ivvae-tiny": "IV-VAE (GCConv + KTC)",
        "small": "PV-VAE (causal conv)", "gcconv-small": "GCConv (no KTC)", "ivvae-small": "IV-VAE (GCConv + KTC)"}


def gcconv_init(out: Path, name: str) -> str:
    """A weights folder of the GCConv-only ablation ``name`` with random weights (seed 0), to ``--init`` from."""
    folder = out / f"{name}-init"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        base = PRESETS[name.replace("gcconv-", "ivvae-")]
        IVVAE(base.replace(keyframe_compression=False, base_channels=GCCONV_WIDTH[name], name=name)).save_pretrained(
            folder)
    return str(folder)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def stlpips_metric():
    """ST-LPIPS (alex) if its converted weights are set up (``pvvae setup-metrics``), else None (column left out)."""
    from pvvae_cli.metrics.lpips_metric import STLPIPSMetric
    from pvvae_cli.metrics.network_files import MetricUnavailable

    try:
        return STLPIPSMetric()
    except MetricUnavailable as e:
        print(f"ST-LPIPS left out: {e}")
        return None


@torch.no_grad()
def reconstruction_scores(codec, clips: torch.Tensor, stlpips=None) -> dict:
    """PSNR (all, first frame, later frames), SSIM and ST-LPIPS (None without the metric) of ``codec`` (pixels ->
    reconstruction, both ``(1, 3, T, H, W)`` in [-1, 1]) over ``clips`` ``(N, 3, T, H, W)``, one clip at a time."""
    per_frame, ssims, dists = [], [], []
    for x in clips.split(1):
        y = codec(x).clamp(-1, 1)
        per_frame.append(psnr_frames(y, x)[0])
        ssims.append(float(ssim(y, x)[0]))
        if stlpips is not None:
            dists.append(float(stlpips(y, x)[0]))
    frames = torch.stack(per_frame)  # (N, T) dB
    return {"psnr": float(frames.mean()), "ssim": statistics.fmean(ssims),
            "stlpips": statistics.fmean(dists) if dists else None,
            "psnr_first_frame": float(frames[:, 0].mean()), "psnr_later_frames": float(frames[:, 1:].mean())}


@torch.no_grad()
def evaluate(vae, clips: torch.Tensor, context: int, stlpips=None) -> dict:
    """Reconstruction (from the posterior mode) and prediction scores on ``clips`` ``(N, 3, T, H, W)`` in [-1, 1]."""
    preds = []
    for x in clips.split(1):
        pred = predict_future(vae, x[:, :, :context], x.shape[2] - context)
        preds.append(score_prediction(pred[:, :, context:], x[:, :, context:], x[:, :, :context])[0])
    return {**reconstruction_scores(lambda x: vae.decode(vae.encode(x).mode()), clips, stlpips),
            "pred_psnr": statistics.fmean(p.psnr for p in preds),
            "copy_psnr": statistics.fmean(p.copy_psnr for p in preds)}


def reference_codecs(clips: torch.Tensor, train_clips: list[torch.Tensor], latent_channels: int,
                     stlpips=None) -> list[dict]:
    """Rows for the two codecs that keep as many numbers as the latent (``eval.baselines``): bicubic down/up-sampling
    per frame, and block PCA fitted on ``train_clips``. Scored like the models (no prediction)."""
    from pvvae_cli.eval.baselines import BlockPCA, bicubic_reconstruct, bicubic_size

    tc, s = 4, 16  # every model of the study is t4s16
    pca = BlockPCA.fit(train_clips, tc, s, latent_channels)
    small = bicubic_size(clips.shape[-2], clips.shape[-1], tc, s, latent_channels)
    codecs = {"bicubic": lambda x: bicubic_reconstruct(x, small), "block PCA": pca.reconstruct}
    return [{"codec": name, **reconstruction_scores(codec, clips, stlpips)} for name, codec in codecs.items()]


def speed(models: dict[str, torch.nn.Module], frames: int, size: int, repeats: int = 5) -> dict[str, dict]:
    """Fastest wall time (ms) of one-pass encode and decode of a ``frames`` x ``size`` x ``size`` clip per model,
    the models interleaved round by round so that a busy moment of a shared machine hits them all alike."""
    x = torch.rand(1, 3, frames, size, size) * 2 - 1
    times: dict[str, dict[str, list[float]]] = {name: {"encode_ms": [], "decode_ms": []} for name in models}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round is a warm-up
            for name, vae in models.items():
                t0 = time.perf_counter()
                z = vae.encode(x).mode()
                t1 = time.perf_counter()
                vae.decode(z)
                t2 = time.perf_counter()
                times[name]["encode_ms"].append(1000 * (t1 - t0))
                times[name]["decode_ms"].append(1000 * (t2 - t1))
    return {name: {k: min(v[1:]) for k, v in t.items()} for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--eval-clips", type=int, default=16)
    ap.add_argument("--context", type=int, default=5, help="observed frames for the prediction score")
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny", help="model size of the three architectures")
    ap.add_argument("--data", type=Path, default=None, help="real clips: train on DATA/train, score DATA/heldout "
                    "windows (examples/get_data.sh); default: synthetic mix clips")
    ap.add_argument("--windows", type=int, default=4, help="with --data: 17-frame windows per held-out clip")
    ap.add_argument("--precision", default="auto", help="training precision (auto: bf16 where it is faster here)")
    ap.add_argument("--out", type=Path, default=Path("runs/ivvae-study"))
    ap.add_argument("--doc", type=Path, default=Path("docs/ivvae-study.md"))
    ap.add_argument("--only", nargs="+", choices=sorted(ARCH), help="train only these models (run several "
                    "invocations in parallel, then one without --only to write the table from their results)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if args.data is not None:
        from bench_baselines import windows  # this script's folder is on sys.path

        clips = torch.stack(windows(str(args.data / "heldout"), args.frames, args.windows, args.size))
        train_data = [str(args.data / "train")]
    else:
        held_out = SyntheticClips("mix", frames=args.frames, size=args.size, seed=1234)
        clips = torch.stack([held_out[i] for i in range(args.eval_clips)])
        train_data = ["synthetic:mix"]
    args.eval_clips = len(clips)
    stlpips = stlpips_metric()
    rows = []
    for preset, predictive in [(m, p) for m in SCALES[args.scale] for p in (True, False)]:
        if args.only and preset not in args.only:
            continue
        name = f"{preset}-{'pred' if predictive else 'recon'}"
        done = args.out / name / "study_row.json"
        if done.is_file():  # finished by an earlier invocation (same settings): keep it
            rows.append(json.loads(done.read_text()))
            continue
        start = ({"init": gcconv_init(args.out, preset), "lr": 3e-4} if preset in GCCONV_WIDTH
                 else {"preset": preset})
        cfg = build_config("video", **start, data=train_data, frames=args.frames, size=args.size,
                           batch_size=args.batch_size, steps=args.steps, workers=0 if args.data is None else 1,
                           precision=args.precision, predictive=predictive,
                           gan_weight=0.0, val_every=10 * args.steps, val_clips=1, ckpt_every=10 * args.steps,
                           log_every=max(1, args.steps // 10), seed=0)
        t0 = time.perf_counter()
        result = train(cfg, args.out / name, quiet=True)
        minutes = (time.perf_counter() - t0) / 60
        vae = load_model(result.weights_dir)
        row = {"run": name, "preset": preset, "predictive": predictive, "train_minutes": minutes,
               "precision": str(resolve_training_dtype(args.precision, torch.device("cpu"))).replace("torch.", ""),
               "parameters": sum(p.numel() for p in vae.parameters()),
               **evaluate(vae, clips, args.context, stlpips)}
        rows.append(row)
        done.write_text(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    if args.only:
        return
    # Speed once all are trained (the weights do not matter for it): one model per architecture, interleaved.
    trained = {r["preset"]: load_model(args.out / r["run"] / "weights") for r in rows}
    timing = speed(trained, 17, 64)
    for r in rows:
        r.update(timing[r["preset"]])
    if args.data is not None:
        train_clips = windows(str(args.data / "train"), args.frames, 16, args.size)
    else:
        source = SyntheticClips("mix", frames=args.frames, size=args.size, seed=0)  # the training distribution
        train_clips = [source[i] for i in range(64)]
    refs = reference_codecs(clips, train_clips, trained[SCALES[args.scale][0]].config.latent_channels, stlpips)
    (args.out / "study.json").write_text(json.dumps({"models": rows, "reference_codecs": refs}, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(to_markdown(rows, args, refs))


def to_markdown(rows: list[dict], args: argparse.Namespace, refs: list[dict] = ()) -> str:
    lpips = all(r.get("stlpips") is not None for r in rows)
    cols = ["model", "objective", "params", "PSNR dB", "SSIM", *(["ST-LPIPS ↓"] if lpips else []),
            "first-frame PSNR", "later-frame PSNR", "prediction PSNR", "copy-last PSNR", "encode ms", "decode ms",
            "train min"]
    head = "| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|\n"
    body = "".join(
        f"| {ARCH[r['preset']]} | {'predictive' if r['predictive'] else 'reconstruction'} | {r['parameters']:,} "
        f"| {r['psnr']:.2f} | {r['ssim']:.3f} | " + (f"{r['stlpips']:.3f} | " if lpips else "")
        + f"{r['psnr_first_frame']:.2f} | {r['psnr_later_frames']:.2f} "
        f"| {r['pred_psnr']:.2f} | {r['copy_psnr']:.2f} | {r['encode_ms']:.0f} | {r['decode_ms']:.0f} "
        f"| {r['train_minutes']:.1f} |\n" for r in rows)
    body += "".join(
        f"| *{r['codec']}* (reference codec) | – | – | {r['psnr']:.2f} | {r['ssim']:.3f} | "
        + (f"{r['stlpips']:.3f} | " if lpips else "") + f"{r['psnr_first_frame']:.2f} | {r['psnr_later_frames']:.2f} "
        "| – | – | – | – | – |\n" for r in refs)
    models = SCALES[args.scale]
    flags = (f"--scale {args.scale} " + (f"--data {args.data} --windows {args.windows} " if args.data else "")
             + f"--steps {args.steps} --frames {args.frames} --size {args.size} --batch-size {args.batch_size} "
             + ("" if args.data else f"--eval-clips {args.eval_clips} ") + f"--context {args.context} "
             f"--precision {args.precision}")
    data = (f"the training clips of `{args.data}/train` (`examples/get_data.sh`; random {args.size}x{args.size} "
            f"crops of {args.frames} frames)" if args.data else
            f"`synthetic:mix` clips of {args.frames} frames at {args.size}x{args.size}")
    held = (f"{args.eval_clips} windows of {args.frames} frames at {args.size}x{args.size} of the held-out clips "
            f"(`{args.data}/heldout`, {args.windows} per clip, the clips of `pvvae eval --windows`)" if args.data
            else f"{args.eval_clips} held-out synthetic clips (seed 1234)")
    precisions = sorted({r.get("precision", "fp32") for r in rows})
    return (
        f"# IV-VAE vs PV-VAE at equal CPU budget ({args.scale})\n\n"
        f"Made by `python benchmarks/study_ivvae.py {flags}` on {cpu_name()} (one thread per run, shared machine), "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        f"Each model: `pvvae train` recipe (video stage, GAN off, the preset's default learning rate, "
        f"{'/'.join(precisions)} autocast) for {args.steps} steps of batch {args.batch_size} on {data}; all three "
        f"have the same latent size ({models[0]}, {models[2]}: t4s16). Scores on {held}: reconstruction from the "
        "posterior mode" + (", ST-LPIPS (alex, shift-tolerant; not comparable with LPIPS) per frame" if lpips else "")
        + "; first-frame vs later-frame PSNR (IV-VAE's claim is that causal convolutions treat frames unequally); "
        f"prediction of frames {args.context}..{args.frames - 1} from the first {args.context} against copying the "
        "last observed frame. Speed: one-pass encode and decode of a 17x64x64 clip, fastest of 5 with the three "
        "architectures interleaved, one thread of a shared machine (rough; the same for both objectives). Train "
        "minutes: wall time under a varying load, not comparable between rows.\n\n"
        + head + body +
        f"\nGCConv (no KTC) is `IVVAEConfig(keyframe_compression=False)` at width {GCCONV_WIDTH[models[1]]} (about the "
        f"same parameters as {models[2]}), trained from a saved random init at {models[2]}'s learning rate. "
        "Reference codecs keep as many numbers per clip as the latent (`eval.baselines`): bicubic down/up-sampling "
        "per frame, and block PCA fitted on " + ("16 windows per training clip" if args.data else
                                                  "64 clips of the training stream") + ".\n"
    )


if __name__ == "__main__":
    main()
