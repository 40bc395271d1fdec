"""Gate and export a trained PV-VAE as the shipped default model (issue 13).

Usage: python benchmarks/ship_model.py RUN_ROOT --out weights/pvvae-small --version 0.1.0 [--data data]
       [--sizes 64 128 256] [--windows 4] [--stats-clips 32] [--force]

RUN_ROOT is a run of ``examples/train_default.sh``: the weights of its last finished stage are shipped
(``5-decoder-perceptual``, ``4-decoder-hr`` when the recipe ran them, else ``3-decoder``). Steps:
1. per-channel latent statistics (mean, std of the posterior mode) on training windows, stored in the config so
   ``encode --normalize`` and ``gen`` work on standardised latents;
2. the weights stored in fp16 (half the file; loading computes in fp32); everything below measures that file;
3. on the held-out clips (``DATA/heldout``, never trained on), at every size: ``pvvae eval DATA/heldout -m OUT
   --size S --windows W --predict-context 9 --json ...`` (the exact command the model card gives), and the two
   reference codecs that keep as many numbers as the latent, on the same windows and metrics: bicubic down/up
   sampling per frame, and block PCA fitted on the training windows of all sizes (``eval.baselines``);
4. the gate: the model's PSNR, SSIM and ST-LPIPS beat both codecs at every size (``--force`` exports anyway,
   marked as failing the gate in the card);
5. ``OUT``: config.json (with ``release`` name and version), model.safetensors, README.md (the model card: data
   with packages and licences from ``DATA/MANIFEST.tsv``, the recipe and its wall time, the table, the commands).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_baselines import windows  # the clips of `pvvae eval --windows N` (this script's folder is on sys.path)

STAGES = ("1-image", "2-video", "3-decoder", "4-decoder-hr", "5-decoder-perceptual")  # train_default.sh's
KEYS = (("psnr", "PSNR dB ↑", 2), ("ssim", "SSIM ↑", 4), ("stlpips", "ST-LPIPS ↓", 4), ("rfvd", "rFVD ↓", 1))


@torch.no_grad()
def latent_stats(vae, clips: list[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    z = torch.cat([vae.encode(x[None]).mode().transpose(0, 1).flatten(1) for x in clips], dim=1)  # (C, N)
    return tuple(z.mean(1).tolist()), tuple(z.std(1).tolist())


def run_eval(spec: Path, heldout: Path, size: int, count: int, json_path: Path) -> tuple[str, dict]:
    cmd = ["pvvae", "eval", str(heldout), "-m", str(spec), "--size", str(size), "--windows", str(count),
           "--predict-context", "9", "--json", str(json_path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the card's command: the data folder as examples/get_data.sh names it, the model as shipped
    return f"pvvae eval data/{heldout.name} -m MODEL " + " ".join(cmd[5:-2]), json.loads(json_path.read_text())


@torch.no_grad()
def baseline_metrics(codec, clips: list[torch.Tensor], nets) -> dict[str, float]:
    from pvvae_cli.metrics.fvd import extract_features, fvd_from_features
    from pvvae_cli.metrics.image import psnr, ssim

    rows: dict[str, list[float]] = {"psnr": [], "ssim": [], "stlpips": []}
    orig, recon = [], []
    for x in clips:
        x = x[None]
        y = codec(x).clamp(-1, 1)
        rows["psnr"].append(float(psnr(y, x)))
        rows["ssim"].append(float(ssim(y, x)))
        if nets.stlpips is not None and not hasattr(nets.stlpips, "reason"):
            rows["stlpips"].append(float(nets.stlpips(y, x)[0]))
        if nets.features is not None and not hasattr(nets.features, "reason"):
            orig.append(extract_features(nets.features, [x], 1))
            recon.append(extract_features(nets.features, [y], 1))
    out = {k: float(np.mean(v)) for k, v in rows.items() if v}
    if len(orig) >= 2:
        out["rfvd"] = fvd_from_features(np.concatenate(orig), np.concatenate(recon))
    return out


def stage_wall_seconds(run: Path) -> dict[str, float]:
    """Each stage's wall time from its run folder's file times: train_config.json is written at the start, the
    exported weights at the end."""
    out = {}
    for name in STAGES:
        start, end = run / name / "train_config.json", run / name / "weights" / "model.safetensors"
        if start.is_file() and end.is_file():
            out[name] = end.stat().st_mtime - start.stat().st_mtime
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--name", default=None, help="default: the --out folder's name")
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--stats-clips", type=int, default=32)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()

    from pvvae_cli import VideoVAE
    from pvvae_cli.eval.baselines import BlockPCA, bicubic_reconstruct, bicubic_size
    from pvvae_cli.eval.reconstruction import open_metrics

    name = args.name or args.out.name
    finished = [s for s in STAGES if (args.run / s / "weights" / "model.safetensors").is_file()]
    if "3-decoder" not in finished:
        sys.exit(f"{args.run}: no finished 3-decoder stage (run examples/train_default.sh {args.run} first)")
    src = args.run / finished[-1] / "weights"
    print(f"shipping {src}", flush=True)
    vae = VideoVAE.from_pretrained(src).eval()
    cfg = vae.config
    train_dir, held_dir = args.data / "train", args.data / "heldout"

    # 1. latent statistics (training windows at the smallest and largest size)
    stat_clips = [c for s in (min(args.sizes), max(args.sizes)) for c in windows(str(train_dir), 17, 8, s)]
    mean, std = latent_stats(vae, stat_clips[: args.stats_clips])
    vae.config = cfg = cfg.replace(latents_mean=mean, latents_std=std)

    # 2. fp16 storage, measured as stored
    release = {"name": name, "version": args.version, "date": datetime.date.today().isoformat()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))  # renamed to --out at the end
    vae.save_pretrained(tmp, dtype=torch.float16, release=release)

    # 3. model (through `pvvae eval`) and baselines, per size
    nets = open_metrics(True, False, True, torch.device("cpu"))
    table, commands, passed = [], {}, True
    # block PCA: one fit on the training windows of every size together (as bench_baselines.py; stronger at every
    # size than a fit per size)
    train = [c for size in args.sizes for c in windows(str(train_dir), 17, args.windows * 4, size)]
    pca = BlockPCA.fit(train, cfg.temporal_compression, cfg.spatial_compression, cfg.latent_channels)
    for size in args.sizes:
        cmd, report = run_eval(tmp, held_dir, size, args.windows, tmp / f"eval-{size}.json")
        commands[size] = cmd
        model = report["models"][0]["metrics"]
        n = report["num_videos"]
        held = windows(str(held_dir), 17, args.windows, size)
        small = bicubic_size(size, size, cfg.temporal_compression, cfg.spatial_compression, cfg.latent_channels)
        base = {"bicubic": baseline_metrics(lambda x, small=small: bicubic_reconstruct(x, small), held, nets),
                "block PCA": baseline_metrics(pca.reconstruct, held, nets)}
        ok = all(model[k] > b[k] for b in base.values() for k in ("psnr", "ssim")) and all(
            model[k] < b[k] for b in base.values() for k in ("stlpips",) if k in model and k in b)
        passed &= ok
        table.append((size, n, model, base, ok))
        print(f"{size}: model " + ", ".join(f"{k} {model.get(k, float('nan')):.4g}" for k, _, _ in KEYS)
              + " | " + " | ".join(f"{b} " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()) for b, m in base.items())
              + f" -> {'pass' if ok else 'FAIL'}", flush=True)
    for f in tmp.glob("eval-*.json"):
        f.unlink()
    if not passed and not args.force:
        shutil.rmtree(tmp)
        sys.exit("the model does not beat both reference codecs at every size: not shipped (--force to export "
                 "anyway, marked in the card)")

    card = model_card(name, args, vae, table, commands, passed, stage_wall_seconds(args.run))
    (tmp / "README.md").write_text(card)
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.chmod(0o755)
    tmp.rename(args.out)
    print(f"wrote {args.out} ({(args.out / 'model.safetensors').stat().st_size / 2**20:.1f} MiB)")


def _fmt(metrics: dict, key: str, digits: int) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "n/a"


def model_card(name, args, vae, table, commands, passed, walls) -> str:
    from pvvae_cli import __version__

    cfg = vae.config
    run = args.run
    total = sum(walls.values()) / 3600
    hours = f"{total:.0f} hour{'s' if round(total) != 1 else ''}" if total >= 0.75 else f"{total * 60:.0f} minutes"
    configs = {s: json.loads((run / s / "train_config.json").read_text()) for s in STAGES
               if (run / s / "train_config.json").is_file()}
    lines = [
        f"# {name} {args.version}", "",
        f"pvvae's default PV-VAE: a {cfg.tag} causal video VAE ({vae.num_parameters():,} parameters, preset "
        f"`{cfg.name}`{', with the linear block shortcut' if cfg.linear_shortcut else ''}"
        f"{f' and a pixel refiner of width {cfg.refiner_channels}' if cfg.refiner_channels else ''}) trained with the "
        f"predictive objective by pvvae {__version__}'s own `train` / `finetune-decoder`, on the CPU. Weights stored "
        "in fp16 (computed in fp32).", "",
        "**What it is for**: trying pvvae end to end (encode, decode, predict, gen) on real video with weights that "
        f"beat simple codecs of the same size. It is small and was trained for about {hours} on a 2-core CPU on a "
        "few clips: far from the paper's 661 M-parameter model, not for research results.", "",
        "## Held-out quality" + ("" if passed else " (FAILS the gate: exported with --force)"), "",
        "17-frame windows of the held-out clips (never trained on), short side resized to the size and centre-"
        f"cropped; {args.windows} windows per clip. Reference codecs keep as many numbers per clip as the latent "
        f"({cfg.latent_channels} per {cfg.temporal_compression}x{cfg.spatial_compression}x{cfg.spatial_compression}"
        " block): bicubic down/up-sampling per frame, and block PCA fitted on the training clips (windows at every "
        "size of the table, one fit).", "",
        "| size | windows | codec | " + " | ".join(label for _, label, _ in KEYS) + " | prediction PSNR dB "
        "(copy-last) |",
        "|---|---|---|" + "---|" * (len(KEYS) + 1),
    ]
    for size, n, model, base, _ok in table:
        pred = f"{model['pred_psnr']:.2f} ({model['copy_psnr']:.2f})" if "pred_psnr" in model else "n/a"
        lines.append(f"| {size}² | {n} | **{name}** | " + " | ".join(_fmt(model, k, d) for k, _, d in KEYS)
                     + f" | {pred} |")
        for codec, m in base.items():
            lines.append(f"| {size}² | {n} | {codec} | " + " | ".join(_fmt(m, k, d) for k, _, d in KEYS) + " | |")
    lines += [
        "", "PSNR per frame on [0, 1], then the mean; prediction: frames 9..16 from the latents of frames 0..8 "
        "and the learned padding tokens, against repeating frame 8. rFVD over so few clips is biased upwards: "
        "compare within a row group only.", "",
        "Reproduce the model's rows (after `bash examples/get_data.sh data`):", "", "```bash",
        *[commands[s].replace("MODEL", f"weights/{name}") for s, *_ in table], "```", "",
        "and the reference codecs' PSNR/SSIM: `python benchmarks/bench_baselines.py --train data/train --heldout "
        f"data/heldout --channels {cfg.latent_channels} --windows {args.windows}`; the whole table: "
        f"`python benchmarks/ship_model.py RUN --out weights/{name} --version {args.version}`.", "",
        "## Training", "",
        "Recipe: `examples/train_default.sh` (the paper's stages: image pretraining, predictive video training, "
        "decoder fine-tuning, and optionally a second decoder fine-tuning on larger crops and a last one with a "
        "perceptual term; continue from these "
        "weights with `INIT=weights/" + name + "`).", "",
    ]
    recipe_log = run / "recipe.log"
    if recipe_log.is_file():  # the recipe's invocations on this run folder, settings spelled out
        lines += ["Invocations on the run folder (`recipe.log`; a rerun skips finished stages):", "", "```bash",
                  *[line.replace(str(run), "RUN").replace(str(args.data), "data")
                    for line in recipe_log.read_text().splitlines() if line.strip()], "```", ""]
    lines += [
        "| stage | steps | batch | crop | lr | precision | wall time |", "|---|---|---|---|---|---|---|",
    ]
    for stage, c in configs.items():
        wall = f"{walls[stage] / 60:.0f} min" if stage in walls else "n/a"
        crop = f"{c['size']}² (short side {c['size']}..{c['scale_max']})" if c.get("scale_max") else f"{c['size']}²"
        lines.append(f"| {stage} | {c['steps']} | {c['batch_size']} | {crop} | {c['lr']} | {c['precision']} | "
                     f"{wall} |")
    video = configs.get("2-video", {})
    lines += [
        "", f"Objective (stage 2): max drop ratio {video.get('max_drop_ratio')}, padding {video.get('padding')}, "
        f"MSE + motion loss, KL {video.get('kl_weight')}, no GAN or perceptual loss (CPU budget). "
        + (f"The linear shortcut was fitted by block PCA on {video.get('shortcut_pca')} training clips before step "
           "0 (so stage 1, images, was skipped: the shortcut's later-frame maps need video clips)"
           + (", and kept frozen in every stage." if video.get("freeze_shortcut") else ".")
           if video.get("shortcut_pca") else ""),
        *([f"Stage 5-decoder-perceptual adds the ST-LPIPS term at weight {perc['perceptual_weight']} to MSE + "
           "motion (an MSE-trained decoder smooths; the gate measures ST-LPIPS too)."]
          if (perc := configs.get("5-decoder-perceptual")) else []),
        f"Total wall time {sum(walls.values()) / 60:.0f} min on a 2-core CPU.", "",
        "## Data", "", "Fetched by `examples/get_data.sh` from Debian and PyPI package archives:", "",
        "| file | role | package | licence |", "|---|---|---|---|",
    ]
    manifest = args.data / "MANIFEST.tsv"
    if manifest.is_file():
        rows = [r.split("\t") for r in manifest.read_text().splitlines()[1:] if r.strip()]
        used = [r for r in rows if r[1] in ("train", "heldout")]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in used]
        photos = [r for r in rows if r[1] == "photos"]
        if photos:
            lines.append(f"| photos/ ({len(photos)} files) | not used by this recipe | "
                         f"{', '.join(sorted({r[2] for r in photos}))} | see MANIFEST.tsv |")
    lines += ["", "## Limitations", "",
              f"Trained on {len(list((args.data / 'train').iterdir()))} short clips at low resolution for about "
              f"{hours}: expect blur on fine texture. Prediction (frames from the latents of a prefix) is below "
              "copying the last frame: the predictive stage was short and slow (a larger learning rate cost "
              "reconstruction) and the decoder stages train reconstruction only; use it to try the `predict` "
              "pipeline, not for forecasts. The numbers above are on "
              "two held-out clips only.", "",
              "Licences: the weights are derived from the training clips listed above; some are under share-alike "
              "terms (CC-BY-SA, GPL). Whether those terms reach trained weights is not settled; check them before "
              "redistributing the weights in a product.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
