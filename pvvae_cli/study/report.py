"""The study's report: ``results.json`` -> ``results.md`` (tables, mean ± std over seeds), ``convergence.png``
(generation metrics against DiT steps, one line per variant, shaded ± std), ``latent_distance.png`` and a PCA strip
per variant (input frames above their latent PCA frames), all written atomically into one folder (``docs/
diffusability/`` by default). Every number comes from ``results.json``; nothing here is measured.

"spread" is the population standard deviation over seeds (0 with one seed). "Steps to reach" is the first
evaluation step at which a variant's mean curve is at least as good as the ``recon`` variant's final mean (the
paper's convergence comparison; "-" when never within the run).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pvvae_cli.runtime.atomic import atomic_path
from pvvae_cli.study.config import VARIANTS

# generation metrics: key -> (label, lower is better)
GEN_METRICS = {"fvd": ("FVD (I3D)", True), "kvd": ("KVD (I3D)", True), "class_acc": ("class accuracy", False),
               "fcd": ("FCD (judge features)", True)}
VAE_METRICS = {"recon_psnr": "recon PSNR (dB)", "recon_ssim": "recon SSIM", "pred_psnr": "prediction PSNR (dB)",
               "copy_last_psnr": "copy-last PSNR (dB)", "recon_class_acc": "judge accuracy on recons",
               "recon_fcd": "FCD of recons"}


def _runs(results: dict, variant: str) -> list[dict]:
    return [r for r in results["runs"] if r["variant"] == variant]


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


def curves(results: dict, variant: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and std over seeds of ``key`` at the evaluation steps every seed of ``variant`` has."""
    runs = [{e["step"]: e[key] for e in r["curve"] if key in e} for r in _runs(results, variant)]
    steps = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    vals = np.array([[r[s] for s in steps] for r in runs], dtype=np.float64).reshape(len(runs), len(steps))
    return np.array(steps), vals.mean(0), vals.std(0)


def steps_to_reach(results: dict, variant: str, key: str) -> int | None:
    lower = GEN_METRICS[key][1]
    _, ref, _ = curves(results, "recon", key)
    steps, mean, _ = curves(results, variant, key)
    if not len(ref):
        return None
    target = ref[-1]
    for s, m in zip(steps, mean, strict=True):
        if (m <= target) if lower else (m >= target):
            return int(s)
    return None


def _fmt(m: float, s: float) -> str:
    digits = 4 if abs(m) < 1 else 2
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def results_markdown(results: dict) -> str:
    cfg = results["config"]
    n = len(cfg["seeds"])
    variants = [v for v in VARIANTS if _runs(results, v)]
    head = "| | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants) + "\n"
    lines = [
        "# Diffusability study: results", "",
        f"Written by `pvvae_cli.study` from `results.json`: {n} seed(s) {cfg['seeds']}, mean ± spread (population "
        f"std over seeds). Data: digits {cfg['classes']}, {cfg['train_per_class']} train / {cfg['test_per_class']} "
        f"test clips per class, {cfg['frames']} frames {cfg['size']}x{cfg['size']}. VAE `{cfg['vae_preset']}`: "
        f"{cfg['vae_steps']} video-stage + {cfg['decoder_steps']} decoder steps, batch {cfg['vae_batch']}. DiT "
        f"`{cfg['gen_preset']}`: {cfg['gen_steps']} steps, batch {cfg['gen_batch']}, lr {cfg['gen_lr']}, time shift "
        f"{cfg['gen_time_shift']}; "
        f"{cfg['eval_samples']} samples per evaluation ({cfg['sample_steps']} Euler steps) against "
        f"{results['num_test_clips']} real test clips. Judge accuracy on real test clips: "
        f"{results['judge_test_accuracy']:.3f}. The protocol and how to read this: ../diffusability.md.", "",
        "## VAEs (test clips)", "", head.rstrip("\n")]
    for key, label in VAE_METRICS.items():
        cells = [_fmt(*mean_std([r["vae"][key] for r in _runs(results, v)])) for v in variants]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Generation at the last evaluation", "", head.rstrip("\n")]
    for key, (label, lower) in GEN_METRICS.items():
        cells = []
        for v in variants:
            steps, mean, std = curves(results, v, key)
            cells.append(_fmt(mean[-1], std[-1]) if len(steps) else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} ({'lower' if lower else 'higher'} is better) | " + " | ".join(cells) + " |")
    lines += ["", "Steps to reach the `recon` variant's final mean value:", ""]
    for key, (label, _) in GEN_METRICS.items():
        if len(curves(results, "recon", key)[0]):
            reach = {v: steps_to_reach(results, v, key) for v in variants}
            lines.append(f"- {label}: " + ", ".join(f"{v} {s if s is not None else '-'}" for v, s in reach.items()))
    lines += ["", "## Curves (mean ± spread per evaluation step)", ""]
    for key, (label, _) in GEN_METRICS.items():
        if not len(curves(results, "recon", key)[0]):
            continue
        lines += [f"{label}:", "", "| step | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        steps = curves(results, variants[0], key)[0]
        per = {v: curves(results, v, key) for v in variants}
        for i, s in enumerate(steps):
            cells = [_fmt(per[v][1][i], per[v][2][i]) if i < len(per[v][0]) else "-" for v in variants]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Latent temporal distance (per-channel RMS, standardised latents)", "",
              "| interval (latent frames) | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    dists = {v: np.array([r["latent_distance"] for r in _runs(results, v)]) for v in variants}
    for d in range(dists[variants[0]].shape[1]):
        lines.append(f"| {d + 1} | " + " | ".join(_fmt(dists[v][:, d].mean(), dists[v][:, d].std())
                                                  for v in variants) + " |")
    t = [r["timings"] for r in results["runs"]]
    total = sum(results["timings"].values()) + sum(sum(x.values()) for x in t)
    lines += ["", f"Wall time: {total / 60:.1f} min in all, each phase as long as it took when it ran (data, judge "
              f"and reference features {sum(results['timings'].values()):.0f} s; "
              f"per VAE and DiT run, mean: VAE {np.mean([x['vae_s'] for x in t]):.0f} s, DiT with evaluations "
              f"{np.mean([x['gen_s'] for x in t]):.0f} s).", ""]
    return "\n".join(lines)


def plot_convergence(results: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in GEN_METRICS if len(curves(results, "recon", k)[0])]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for v in VARIANTS:
            steps, mean, std = curves(results, v, key)
            if len(steps):
                ax.plot(steps, mean, marker="o", ms=3, label=v)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(GEN_METRICS[key][0], fontsize=9)
        ax.set_xlabel("DiT step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"mean ± std over {len(results['config']['seeds'])} seed(s)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_latent_distance(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    for v in VARIANTS:
        d = np.array([r["latent_distance"] for r in _runs(results, v)])
        if d.size:
            x = np.arange(1, d.shape[1] + 1)
            ax.errorbar(x, d.mean(0), yerr=d.std(0), marker="o", ms=3, capsize=2, label=v)
            ax.set_xticks(x)
    ax.set_xlabel("interval (latent frames)", fontsize=8)
    ax.set_ylabel("mean L2 / sqrt(C)", fontsize=8)
    ax.set_title("latent temporal distance", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def pca_strip(video: Path, path: Path, every: int = 4, scale: int = 2) -> Path:
    """Every ``every``-th frame of a side-by-side PCA video (input | PCA): inputs in a row, their PCA frames below,
    enlarged ``scale`` times (nearest)."""
    from pvvae_cli.media.video_io import read_clip
    from pvvae_cli.media.writer import write_video

    frames, _ = read_clip(video)
    picked = frames[::every]
    w = frames.shape[2]
    half = (w - 2) // 2
    # input frames on top, their latent PCA frames below
    top = np.concatenate([f[:, :half] for f in picked], axis=1)
    bottom = np.concatenate([f[:, half + 2:] for f in picked], axis=1)
    strip = np.concatenate([top, bottom], axis=0)
    strip = strip.repeat(scale, axis=0).repeat(scale, axis=1)  # 64-px frames are too small to read on a page
    write_video(path, strip[None], fps=1.0)
    return path


def write_report(results: dict, study_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the report of ``results`` (of the study in ``study_dir``) into ``out_dir``; returns the files."""
    out_dir, study_dir = Path(out_dir), Path(study_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(results_markdown(results))
    written.append(out_dir / "results.md")
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    written.append(out_dir / "results.json")
    conv = plot_convergence(results, out_dir / "convergence.png")
    written += [conv] if conv else []
    written.append(plot_latent_distance(results, out_dir / "latent_distance.png"))
    first = results["config"]["seeds"][0]
    for v in VARIANTS:
        video = study_dir / f"seed{first}" / v / "pca_test0.mp4"
        if video.exists():
            written.append(pca_strip(video, out_dir / f"pca_{v}.png"))
    return written
