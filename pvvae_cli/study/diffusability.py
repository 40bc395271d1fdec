"""The diffusability study: do predictive latents make latent diffusion easier (the paper's Table 4), at small scale?

``run_study(cfg, digits, out_dir)`` runs, in order (every phase's output is kept, and a finished phase is reused
when the study is run again into the same folder with the same config):

1. data: Moving-MNIST-style train/test clips from real digits (``study.moving_digits``) in ``OUT/data``;
2. the judge: a small clip classifier trained on the real training clips (``study.clip_classifier``), and the
   reference features of the real test clips (I3D and classifier);
3. for each seed and each variant (``recon``: ``--no-predictive``; ``predictive``: predictive + motion loss, the
   same preset, data, steps and seed): ``pvvae train --stage video``, then ``pvvae finetune-decoder``
   (``OUT/SEED/VARIANT/vae``, ``.../decoder``); reconstruction PSNR/SSIM and prediction PSNR vs copy-last on the
   test clips; the latent temporal distance and a PCA video of the test latents; ``pvvae encode`` of the training
   clips; ``pvvae gen train`` of the same DiT with an evaluation every ``eval_every`` steps (FVD/KVD with the
   I3D, class accuracy and FCD with the judge, on ``eval_samples`` fixed-seed samples decoded by that VAE);
   ``pvvae gen sample`` (``.../gen/samples``);
4. ``OUT/results.json`` (every number), then ``study.report`` writes the table and plots.

Pixels are ``(B, 3, T, H, W)`` in [-1, 1] throughout; latents as ``pvvae encode`` stores them.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pvvae_cli.study import moving_digits as md
from pvvae_cli.study.config import VARIANTS, StudyConfig, StudyConfigError

CONFIG_FILE = "study_config.json"
RESULTS_FILE = "results.json"
CLASSIFIER_FILE = "classifier.safetensors"


def _say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def load_split(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The clips of a written split as pixels ``(N, 3, T, H, W)`` in [-1, 1] (read back from the mp4s, as training
    sees them), class ids ``(N,)`` (index into the sorted class names), their names and motions."""
    from pvvae_cli.media.video_io import frames_to_tensor, read_clip

    rows = [line.split(",") for line in (split_dir / md.LABELS_FILE).read_text().splitlines()[1:] if line]
    names = sorted({r[1] for r in rows})
    clips = torch.stack([frames_to_tensor(read_clip(split_dir / r[0])[0]) for r in rows])
    labels = torch.tensor([names.index(r[1]) for r in rows])
    return clips, labels, names, [r[2] for r in rows]


def make_data(cfg: StudyConfig, digits: str | Path, data_dir: Path) -> None:
    """Write ``data_dir/train`` and ``data_dir/test`` unless both are already complete."""
    images, labels = md.load_mnist_csv(digits)
    for split, per_class in (("train", cfg.train_per_class), ("test", cfg.test_per_class)):
        if (data_dir / split / md.LABELS_FILE).exists():
            continue
        spec = md.MovingDigitsSpec(cfg.classes, per_class, cfg.frames, cfg.size, cfg.data_seed)
        md.write_split(md.make_split(images, labels, spec, split), data_dir / split)


class PhaseTimes:
    """Wall seconds per phase, kept in ``path`` (JSON) so that a rerun reusing a phase reports the time it took
    when it ran, not the ~0 s of reusing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def record(self, key: str, t0: float, ran: bool = True) -> None:
        if ran or key not in self.times:
            self.times[key] = time.perf_counter() - t0
            from pvvae_cli.runtime.atomic import atomic_path

            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.times, indent=1))


def _fresh(run_dir: Path, done: bool) -> bool:
    """Whether the phase writing ``run_dir`` must run: not when ``done``; a leftover of an interrupted phase is
    removed first (the study owns these folders)."""
    if done:
        return False
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return True


def train_vae(cfg: StudyConfig, train_dir: Path, test_dir: Path, run_dir: Path, seed: int, predictive: bool,
              quiet: bool = True) -> tuple[Path, bool]:
    """``pvvae train --stage video`` then ``pvvae finetune-decoder`` (same data, batch and seed); returns the
    fine-tuned weights folder and whether anything was (re)trained. No adversarial loss in either stage
    (gan_weight 0): at these step counts it would add cost and noise, and both variants are treated alike."""
    from pvvae_cli.train.config import build_config
    from pvvae_cli.train.trainer import train

    common = dict(data=[str(train_dir)], val_data=[str(test_dir)], frames=cfg.frames, size=cfg.size,
                  batch_size=cfg.vae_batch, seed=seed, gan_weight=0.0, val_clips=2, workers=1,
                  precision=cfg.precision, device=cfg.device, log_every=10)
    video, decoder = run_dir / "vae", run_dir / "decoder"
    redo = _fresh(video, (video / "weights" / "config.json").exists())
    if redo:
        vcfg = build_config("video", preset=cfg.vae_preset, steps=cfg.vae_steps, predictive=predictive,
                            val_every=cfg.vae_steps, ckpt_every=cfg.vae_steps, **common)
        train(vcfg, video, quiet=quiet)
    redo = _fresh(decoder, not redo and (decoder / "weights" / "config.json").exists()) or redo
    if redo:
        dcfg = build_config("decoder", init=str(video / "weights"), steps=cfg.decoder_steps,
                            val_every=cfg.decoder_steps, ckpt_every=cfg.decoder_steps, **common)
        train(dcfg, decoder, quiet=quiet)
    return decoder / "weights", redo


@torch.no_grad()
def vae_metrics(vae, clips: torch.Tensor, batch: int = 8) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Reconstruction PSNR/SSIM (posterior mean) and prediction vs copy-last of ``clips`` ``(N, 3, T, H, W)``:
    the first ``1 + tc*a`` frames (a = half the latent groups, rounded down, at least 1) as context, the rest
    predicted with the VAE's padding latents. Returns the numbers, the latents ``(N, C, t, h, w)`` and the
    reconstructions (like ``clips``)."""
    from pvvae_cli.codec.prediction import predict_from_latents, score_prediction
    from pvvae_cli.metrics.image import psnr, ssim

    device = next(vae.parameters()).device
    tc = vae.config.temporal_compression
    groups = (clips.shape[2] - 1) // tc
    context = 1 + tc * max(1, groups // 2)
    rec_psnr, rec_ssim, pred, copy, latents, recons = [], [], [], [], [], []
    for x in clips.split(batch):
        x = x.to(device)
        z = vae.encode(x).mean
        y = vae.decode(z).float().clamp(-1, 1)
        rec_psnr.append(psnr(y, x).cpu())
        rec_ssim.append(ssim(y, x).cpu())
        latents.append(z.float().cpu())
        recons.append(y.cpu())
        zc = vae.encode(x[:, :, :context]).mean
        out = predict_from_latents(vae, zc, x.shape[2] - context)
        _, per = score_prediction(out[:, :, context:], x[:, :, context:], x[:, :, :context])
        pred.append(per["psnr"].cpu())
        copy.append(per["copy_psnr"].cpu())
    return {"recon_psnr": float(torch.cat(rec_psnr).mean()), "recon_ssim": float(torch.cat(rec_ssim).mean()),
            "pred_psnr": float(torch.cat(pred).mean()), "copy_last_psnr": float(torch.cat(copy).mean()),
            "context_frames": context}, torch.cat(latents), torch.cat(recons)


def encode_set(weights: Path, train_dir: Path, out: Path, device: torch.device) -> None:
    """``pvvae encode TRAIN_DIR -o OUT --model WEIGHTS`` (class folders kept), through the same library calls."""
    from pvvae_cli.codec.latents import LATENT_SUFFIX
    from pvvae_cli.codec.pipeline import Codec, EncodeOptions
    from pvvae_cli.codec.runner import run_encode
    from pvvae_cli.media.discovery import expand_inputs, media_exts, plan_jobs
    from pvvae_cli.models.registry import load_model

    codec = Codec(load_model(str(weights), device=device), str(weights), device, torch.float32)
    files, failures = expand_inputs([str(train_dir)], media_exts())
    jobs, collisions = plan_jobs(files, out, lambda _: LATENT_SUFFIX)
    outcomes = run_encode(codec, jobs, EncodeOptions(), quiet=True)
    bad = failures + collisions + [(str(o.job.source), o.reason) for o in outcomes if o.status == "failed"]
    if bad:
        raise StudyConfigError(f"encoding {train_dir} failed: {bad[0][0]}: {bad[0][1]}")


def eval_hook(vae, features, classifier, ref_i3d: np.ndarray | None, ref_clf: np.ndarray, num: int, steps: int,
              seed: int):
    """The ``gen train`` evaluation: ``num`` fixed-seed samples (classes in turn), decoded by ``vae``, scored with
    FVD/KVD (``features``, e.g. the I3D; skipped when None) and the judge's class accuracy and FCD."""
    from pvvae_cli.gen.generate import sample_latents
    from pvvae_cli.gen.video_eval import decode_latents
    from pvvae_cli.metrics.fvd import extract_features, fvd_from_features, kernel_distance
    from pvvae_cli.study.clip_classifier import class_scores

    def hook(model, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        z, labels = sample_latents(model, num, None, 1.0, steps, seed)
        pixels = torch.cat([decode_latents(vae, z[i:i + 8].to(device), model.config.vae_normalized).cpu()
                            for i in range(0, num, 8)])
        out = class_scores(classifier, pixels, np.array(labels), ref_clf)
        if features is not None:
            feats = extract_features(features, pixels, batch_size=8)
            kvd, _ = kernel_distance(ref_i3d, feats)
            out |= {"fvd": fvd_from_features(ref_i3d, feats), "kvd": kvd}
        return out

    return hook


def read_evals(run_dir: Path) -> list[dict]:
    """The ``kind: "eval"`` records of a gen run's ``metrics.jsonl``, by step (the last record of a step wins)."""
    by_step: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "eval":
            by_step[rec["step"]] = {k: v for k, v in rec.items() if k != "kind"}
    return [by_step[s] for s in sorted(by_step)]


def run_variant(cfg: StudyConfig, seed: int, variant: str, data_dir: Path, out: Path, judge, features,
                ref_i3d, ref_clf, test: tuple, device: torch.device, log=None) -> dict:
    """One VAE (video stage + decoder fine-tune), its analyses, and one DiT on its latents. Returns its numbers."""
    from pvvae_cli.gen.generate import generate
    from pvvae_cli.gen.train_config import GenTrainConfig
    from pvvae_cli.gen.trainer import train_gen
    from pvvae_cli.gen.weights import load_gen
    from pvvae_cli.media.writer import write_video
    from pvvae_cli.models.registry import load_model
    from pvvae_cli.study.clip_classifier import class_scores
    from pvvae_cli.study.latent_analysis import latent_temporal_distance, pca_basis, pca_video, side_by_side

    out.mkdir(parents=True, exist_ok=True)
    timings = PhaseTimes(out / "timings.json")
    t0 = time.perf_counter()
    # a retrained VAE makes its latents and DiT stale: they are redone too
    weights, redo = train_vae(cfg, data_dir / "train", data_dir / "test", out, seed, VARIANTS[variant])
    timings.record("vae_s", t0, redo)
    _say(log, f"seed {seed} {variant}: VAE {'trained' if redo else 'reused'} ({timings.times['vae_s']:.0f} s)")

    t0 = time.perf_counter()
    vae = load_model(str(weights), device=device).eval()
    clips, labels, _, _ = test
    metrics, latents, recons = vae_metrics(vae, clips)
    # the judge on the VAE's reconstructions of the test clips: the floor its samples can reach
    floor = class_scores(judge, recons, labels.numpy(), ref_clf)
    metrics |= {"recon_class_acc": floor["class_acc"], "recon_fcd": floor["fcd"]}
    distance = latent_temporal_distance(latents)
    basis = pca_basis(latents)
    frames = ((clips[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    pca = pca_video(latents[0], cfg.size, cfg.size, basis)
    write_video(out / "pca_test0.mp4", side_by_side(frames, pca, vae.config.temporal_compression), md.FPS)
    timings.record("analysis_s", t0)

    t0 = time.perf_counter()
    latent_dir = out / "latents"
    encode = _fresh(latent_dir, not redo and (latent_dir / ".done").exists())
    if encode:
        redo = True
        encode_set(weights, data_dir / "train", latent_dir, device)
        (latent_dir / ".done").write_text("")
    timings.record("encode_s", t0, encode)

    t0 = time.perf_counter()
    gen_dir = out / "gen"
    redo = _fresh(gen_dir, not redo and (gen_dir / "weights" / "config.json").exists())
    if redo:
        gcfg = GenTrainConfig(data=str(latent_dir), class_from_folders=True, preset=cfg.gen_preset,
                              steps=cfg.gen_steps, batch_size=cfg.gen_batch, lr=cfg.gen_lr, seed=seed,
                              time_shift=cfg.gen_time_shift,
                              eval_every=cfg.eval_every, ckpt_every=cfg.gen_steps, log_every=10,
                              precision=cfg.precision, device=cfg.device)
        hook = eval_hook(vae, features, judge, ref_i3d, ref_clf, cfg.eval_samples, cfg.sample_steps, seed)
        train_gen(gcfg, gen_dir, quiet=True, eval_hook=hook)
    timings.record("gen_s", t0, redo)
    _say(log, f"seed {seed} {variant}: DiT {'trained' if redo else 'reused'} ({timings.times['gen_s']:.0f} s)")

    t0 = time.perf_counter()
    gen = load_gen(str(gen_dir / "weights"), device=device)
    generate(gen, gen_dir / "samples", num=2 * len(cfg.classes), steps=cfg.sample_steps, seed=seed,
             vae_spec=str(weights))
    timings.record("sample_s", t0)
    return {"seed": seed, "variant": variant, "vae": metrics, "latent_distance": distance.tolist(),
            "curve": read_evals(gen_dir), "timings": timings.times}


def run_study(cfg: StudyConfig, digits: str | Path, out_dir: str | Path, features="i3d",
              log: Callable[[str], None] | None = print) -> dict:
    """Run the whole study into ``out_dir`` (see the module docstring) and return ``results.json``'s content.

    ``features``: ``"i3d"`` (the Kinetics-400 I3D from the metrics cache; ``MetricUnavailable`` with the fix when
    it is missing), any ``metrics.fvd.FeatureExtractor`` (tests), or None (no FVD/KVD). Raises
    ``StudyConfigError`` when ``out_dir`` holds a study of another config, ``DigitsError`` for unusable digits,
    before any training."""
    from safetensors.torch import load_file, save_file

    from pvvae_cli.metrics.fvd import extract_features, load_i3d
    from pvvae_cli.runtime.atomic import atomic_path
    from pvvae_cli.runtime.device import resolve_device
    from pvvae_cli.study.clip_classifier import ClipClassifier, predict, train_classifier

    out_dir = Path(out_dir)
    device = resolve_device(cfg.device)
    saved = out_dir / CONFIG_FILE
    if saved.exists() and json.loads(saved.read_text()) != cfg.to_dict():
        raise StudyConfigError(f"{out_dir} holds a study with another configuration ({saved}); use a new --out "
                               "folder (or delete that one)")
    md.load_mnist_csv(digits)  # fails fast on a bad file
    if features == "i3d":
        features = load_i3d(device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(saved) as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=1))
    timings = PhaseTimes(out_dir / "timings.json")

    t0 = time.perf_counter()
    data_dir = out_dir / "data"
    written = not all((data_dir / split / md.LABELS_FILE).exists() for split in ("train", "test"))
    make_data(cfg, digits, data_dir)
    train_clips, train_labels, class_names, _ = load_split(data_dir / "train")
    test = load_split(data_dir / "test")
    timings.record("data_s", t0, written)
    _say(log, f"data: {len(train_clips)} train, {len(test[0])} test clips in {data_dir}")

    t0 = time.perf_counter()
    judge = ClipClassifier(len(class_names))
    trained = not (out_dir / CLASSIFIER_FILE).exists()
    if trained:
        judge = train_classifier(train_clips, train_labels, len(class_names), cfg.classifier_steps,
                                 seed=cfg.data_seed)
        with atomic_path(out_dir / CLASSIFIER_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, tmp)
    else:
        judge.load_state_dict(load_file(out_dir / CLASSIFIER_FILE))
        judge.eval()
    timings.record("judge_s", t0, trained)
    t0 = time.perf_counter()
    test_pred, ref_clf = predict(judge, test[0])
    judge_acc = float((test_pred == test[1].numpy()).mean())
    ref_i3d = extract_features(features, test[0], batch_size=8) if features is not None else None
    timings.record("reference_s", t0)
    _say(log, f"judge: test accuracy {judge_acc:.3f} on {len(test[0])} real clips")

    runs = []
    for seed in cfg.seeds:
        for variant in VARIANTS:
            runs.append(run_variant(cfg, seed, variant, data_dir, out_dir / f"seed{seed}" / variant, judge,
                                    features, ref_i3d, ref_clf, test, device, log))
    results = {"config": cfg.to_dict(), "class_names": class_names, "judge_test_accuracy": judge_acc,
               "fvd_features": getattr(features, "name", None), "num_test_clips": len(test[0]),
               "timings": timings.times, "runs": runs}
    with atomic_path(out_dir / RESULTS_FILE) as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    return results
