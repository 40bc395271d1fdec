"""The training loop of all three PV-VAE stages: ``train(cfg, out_dir)``.

Read top to bottom: set up (distributed, model, losses, optimisers, data), restore a checkpoint if resuming,
then one loop over optimiser steps with validation, checkpoints and logging, then export. The step convention
is nanoGPT's: ``step`` counts completed optimiser updates; the update that takes ``step`` from s to s + 1 is
logged as ``step = s`` in ``metrics.jsonl`` and uses the adversarial loss iff ``s >= gan_start_step``;
validation and checkpoints at ``step = s`` happen *before* that update (so ``step = 0`` is the initial model).

Run folder (``out_dir``): ``train_config.json``, ``metrics.jsonl`` (``kind`` = ``train`` / ``val`` / ``final``),
``samples/step_XXXXXXX.mp4`` (rows: validation clips; columns: ground truth | reconstruction | prediction),
``checkpoints/step_XXXXXXX.pt`` (complete: resume continues exactly), ``weights/`` (the exported model).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from pvvae_cli.runtime.atomic import atomic_path
from pvvae_cli.runtime.device import autocast, resolve_device, resolve_dtype
from pvvae_cli.train.config import TrainConfig
from pvvae_cli.train.data import make_dataset, make_loader
from pvvae_cli.train.discriminator import PatchDiscriminator3D
from pvvae_cli.train.losses import (
    LPIPSLoss,
    adaptive_gan_weight,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_terms,
    weighted_sum,
)
from pvvae_cli.train.objective import PredictiveVAE, kept_frames, num_groups, predictive_forward, sample_num_dropped

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
WEIGHTS_DIR = "weights"
CKPT_FORMAT = 1
# Settings a resumed run may change (they do not alter what is computed, except `steps`, which extends the run).
RESUMABLE_OVERRIDES = ("steps", "workers", "device", "log_every", "val_every", "val_clips", "ckpt_every",
                       "keep_checkpoints")


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message names the file or setting and the fix."""


@dataclass
class TrainResult:
    status: str  # "finished" | "interrupted"
    step: int
    out_dir: Path
    weights_dir: Path | None = None
    last_val: dict = field(default_factory=dict)
    rank_weight_hashes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- small helpers
def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base lr at update ``step``: linear warm-up, then cosine from 1 down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the trainable parameters (frozen ones are left out, so they stay
    bit-identical in the exported weights)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    try:
        device = resolve_device(device_name)
    except ValueError as e:
        raise TrainError(str(e)) from e
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def _rng_state(k_rng: random.Random, noise_gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state as plain lists so the checkpoint loads with weights_only=True
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "k_rng": k_rng.getstate(),
        "noise": noise_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, k_rng: random.Random, noise_gen: torch.Generator) -> None:
    random.setstate(_tuplify(state["python"]))
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    torch.set_rng_state(state["torch"])
    k_rng.setstate(_tuplify(state["k_rng"]))
    noise_gen.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of every tensor of a state dict (names and bytes), to compare replicas."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def list_checkpoints(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / CKPT_DIR).glob("step_*.pt"))


# ---------------------------------------------------------------------------------------------- model
def resolve_init(spec: str) -> str:
    """``--init`` accepts a weights folder, a hub repo id, or a run folder (its exported ``weights/``)."""
    path = Path(spec).expanduser()
    if (path / CONFIG_FILE).is_file() and not (path / "config.json").is_file():
        if not (path / WEIGHTS_DIR / "config.json").is_file():
            raise TrainError(f"{path}: a run folder without exported weights (the run has not finished); "
                             f"finish it with --resume {path}, or pass a weights folder")
        return str(path / WEIGHTS_DIR)
    return spec


def build_vae(cfg: TrainConfig):
    """The model a run starts from: ``--init`` weights or a ``--preset`` with random weights, with the padding
    mode of the run (``--padding``; the decoder stage keeps the model's, it is frozen there)."""
    from pvvae_cli.models.pvvae.model import VideoVAE

    if cfg.init is not None:
        vae = VideoVAE.from_pretrained(resolve_init(cfg.init))
    else:
        vae = VideoVAE.from_preset(cfg.preset)
    if cfg.stage != "decoder" and vae.config.padding_mode != cfg.padding:
        # Rebuild with the requested padding; every other tensor carries over (a new token starts at zero).
        state = {k: v for k, v in vae.state_dict().items() if k != "padding_token"}
        vae_new = VideoVAE(vae.config.replace(padding_mode=cfg.padding))
        missing, unexpected = vae_new.load_state_dict(state, strict=False)
        assert set(missing) <= {"padding_token"} and not unexpected, (missing, unexpected)
        vae = vae_new
    return vae.train()


def model_card(cfg: TrainConfig, step: int, last_val: dict) -> str:
    stage = {"image": "image pretraining (stage 1)", "video": "predictive video training (stage 2)",
             "decoder": "decoder fine-tuning (stage 3)"}[cfg.stage]
    lines = [
        "# PV-VAE weights (pvvae)", "",
        f"Trained with `pvvae` ({stage}) for {step} steps from "
        + (f"`{cfg.init}`" if cfg.init else f"random `{cfg.preset}` weights") + ".", "",
        f"- data: {', '.join(cfg.data)}",
        f"- clips: {cfg.frames} frames at stride {cfg.frame_stride}, {cfg.size}x{cfg.size}, batch {cfg.batch_size}"
        f" x accum {cfg.grad_accum}",
        f"- objective: max drop ratio {cfg.drop_ratio}, padding {cfg.padding}, weights mse {cfg.mse_weight}, motion "
        f"{cfg.motion_weight}, lpips {cfg.lpips_weight}, gan {cfg.gan_weight}{' adaptive' if cfg.gan_adaptive else ''} "
        f"(from step {cfg.gan_start_step}), "
        f"kl {cfg.kl_weight}",
        f"- optimiser: AdamW lr {cfg.lr}, warm-up {cfg.warmup}, cosine to x{cfg.min_lr_ratio}, precision "
        f"{cfg.precision}, EMA {cfg.ema_decay or 'off'}",
    ]
    if last_val:
        vals = ", ".join(f"{k} {v:.2f}" for k, v in last_val.items() if k.startswith(("psnr", "ssim")))
        lines += ["", f"Validation at step {step} on {cfg.val_clips} held-out clips of the same source: {vals} "
                      "(PSNR in dB per frame on [0, 1]; measured, not a benchmark result)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- validation
def validation_clips(cfg: TrainConfig) -> torch.Tensor:
    """Fixed validation clips ``(N, 3, T, S, S)`` in [-1, 1]: ``--val-data``, or the training source drawn
    with a different seed (for folders that means the same files, other windows)."""
    specs = cfg.val_data or cfg.data
    seed = cfg.seed + 7919 if not cfg.val_data else cfg.seed
    dataset = make_dataset(specs, cfg.frames, cfg.size, cfg.frame_stride, seed=seed)
    items = [dataset[i] for i in range(cfg.val_clips)]
    return torch.stack([item if isinstance(item, torch.Tensor) else item[0] for item in items])


@torch.no_grad()
def validate(vae, clips: torch.Tensor, batch_size: int, device: torch.device, dtype: torch.dtype):
    """Reconstruction (everything observed) and prediction (first half of the groups observed) quality.

    Returns ``(metrics, sample)``: metrics has ``psnr_recon``, ``ssim_recon`` and, for clips of more than one
    group, ``psnr_pred`` / ``ssim_pred`` on the predicted frames only and ``psnr_copy_last`` (the baseline that
    repeats the last observed frame); ``sample`` holds the first clips' (target, recon, pred) for a video."""
    from pvvae_cli.metrics.image import psnr, ssim

    was_training = vae.training
    vae.eval()
    t = clips.shape[2]
    groups = num_groups(t, vae.config.temporal_compression)
    dropped = (groups - 1) - (groups - 1) // 2
    kept = kept_frames(t, dropped, vae.config.temporal_compression)
    gen = torch.Generator(device).manual_seed(0)  # gaussian padding: the same noise at every validation
    recons, preds = [], []
    for i in range(0, clips.shape[0], batch_size):
        x = clips[i : i + batch_size].to(device)
        with autocast(device, dtype):
            recons.append(predictive_forward(vae, x, 0, sample=False).recon.float().clamp(-1, 1).cpu())
            if dropped:
                preds.append(predictive_forward(vae, x, dropped, sample=False, generator=gen)
                             .recon.float().clamp(-1, 1).cpu())
    vae.train(was_training)
    recon = torch.cat(recons)
    metrics = {"psnr_recon": float(psnr(recon, clips).mean()), "ssim_recon": float(ssim(recon, clips).mean())}
    sample = {"target": clips[:2], "recon": recon[:2]}
    if dropped:
        pred = torch.cat(preds)
        future, truth = pred[:, :, kept:], clips[:, :, kept:]
        copy_last = clips[:, :, kept - 1 : kept].expand_as(truth)
        metrics.update({
            "psnr_pred": float(psnr(future, truth).mean()), "ssim_pred": float(ssim(future, truth).mean()),
            "psnr_copy_last": float(psnr(copy_last, truth).mean()), "pred_context_frames": kept,
        })
        sample["pred"] = pred[:2]
    return metrics, sample


def write_sample(path: Path, sample: dict, fps: float = 8.0) -> Path:
    """Rows = clips, columns = ground truth | reconstruction | prediction; mp4 (png for single frames)."""
    from pvvae_cli.media.video_io import tensor_to_frames, write_video

    cols = [sample["target"], sample["recon"]] + ([sample["pred"]] if "pred" in sample else [])
    rows = [torch.cat([col[i] for col in cols], dim=3) for i in range(cols[0].shape[0])]
    grid = torch.cat(rows, dim=2)  # (3, T, H * n_clips, W * n_cols)
    frames = tensor_to_frames(grid)
    path = path.with_suffix(".png" if frames.shape[0] == 1 else ".mp4")
    write_video(path, frames, fps)
    return path


# ---------------------------------------------------------------------------------------------- the loop
def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    quiet: bool = False,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (``resume=True``: continue the run saved there). Under torchrun this is
    DistributedDataParallel over ``WORLD_SIZE`` processes. ``on_step(step)`` runs after every update (tests).

    Stops cleanly on SIGTERM / SIGINT (first one): the current step finishes, a checkpoint is written, and the
    result's status is ``interrupted``. Raises ``TrainError``, ``ConfigError``, ``DataError``, ``WeightsError``
    or ``perceptual.MetricUnavailable`` for problems the user can fix."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    dist_info, device = _init_distributed(cfg.device)
    is_main = dist_info.is_main
    try:
        dtype = resolve_dtype(cfg.precision, device)
    except ValueError as e:
        raise TrainError(str(e)) from e

    def say(msg: str) -> None:
        if is_main and not quiet:
            (log or (lambda m: tqdm.write(m, file=sys.stderr)))(msg)

    def warn(msg: str) -> None:
        prefix = f"warning (rank {dist_info.rank}): " if dist_info.enabled else "warning: "
        (log or (lambda m: tqdm.write(m, file=sys.stderr)))(prefix + msg)

    # ---- things that can fail fast, before anything is written
    lpips = LPIPSLoss(cfg.lpips_net).to(device) if cfg.lpips_weight > 0 else None  # MetricUnavailable offline
    checkpoints = list_checkpoints(out_dir) if resume else []
    if resume and not checkpoints:
        raise TrainError(f"{out_dir}: no checkpoint to resume from (expected {CKPT_DIR}/step_*.pt)")
    if not resume and (out_dir / CONFIG_FILE).exists():
        raise TrainError(f"{out_dir}: already holds a run; continue it with --resume {out_dir} or pick another --out")
    dataset = make_dataset(cfg.data, cfg.frames, cfg.size, cfg.frame_stride, seed=cfg.seed)
    val_clips = validation_clips(cfg) if is_main else None

    # ---- model, discriminator, optimisers
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    vae = build_vae(cfg).to(device)
    if cfg.stage == "decoder":
        # Stage 3: encoder and padding frozen; they are left out of the optimiser, so they stay bit-identical.
        vae.encoder.requires_grad_(False)
        if vae.padding_token is not None:
            vae.padding_token.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]  # norms, biases, padding token: no weight decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    disc = PatchDiscriminator3D(channels=cfg.disc_channels, num_layers=cfg.disc_layers).to(device)
    disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
    ema = EMA(vae, cfg.ema_decay) if cfg.ema_decay > 0 else None
    use_gan = cfg.gan_weight > 0
    k_rng = random.Random(cfg.seed)  # number of dropped groups: the same draw on every rank
    noise_gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + dist_info.rank)  # posterior samples

    step, skipped_files = 0, set()
    if resume:
        ckpt = _load_latest(checkpoints, warn)
        _check_resumable(ckpt["train_config"], cfg, out_dir)
        vae.load_state_dict(ckpt["model"])
        disc.load_state_dict(ckpt["disc"])
        opt.load_state_dict(ckpt["opt"])
        disc_opt.load_state_dict(ckpt["disc_opt"])
        sched.load_state_dict(ckpt["sched"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        step = ckpt["step"]
        skipped_files = set(ckpt.get("skipped_files", []))
        rng_states = ckpt["rng"]
        if len(rng_states) == dist_info.world:
            _set_rng_state(rng_states[dist_info.rank], k_rng, noise_gen)
        else:
            warn(f"checkpoint was written by {len(rng_states)} processes, now {dist_info.world}: the random "
                 "streams restart (the run continues, but not bit-for-bit)")
            k_rng.setstate(_tuplify(rng_states[0]["k_rng"]))
        say(f"resuming {out_dir} at step {step}")
    if dist_info.enabled:
        dist.barrier()  # every rank has checked the run folder before rank 0 writes to it
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        # (Re)written on resume too: --steps may have been extended.
        _atomic_write(out_dir / CONFIG_FILE, (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
        (out_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        (out_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        if resume:
            _truncate_metrics(out_dir / METRICS_FILE, step)

    model: nn.Module = PredictiveVAE(vae)
    disc_ddp: nn.Module = disc
    if dist_info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = DDP(model, device_ids=ids)
        disc_ddp = DDP(disc, device_ids=ids)

    # ---- data: this rank's slice of the global stream, from where the run stands
    per_step = cfg.batch_size * cfg.grad_accum
    loader = make_loader(dataset, cfg.batch_size, cfg.workers, start=step * per_step, rank=dist_info.rank,
                         world=dist_info.world, worker_init_fn=_worker_ignore_sigint)
    batches = iter(loader)

    metrics_path = out_dir / METRICS_FILE
    weights = cfg.loss_weights  # the adversarial term is added separately (adaptive balance)

    def emit(record: dict) -> None:
        if is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def eval_model():
        if ema is None:
            return vae
        shadow = copy.deepcopy(vae)
        ema.copy_to(shadow)
        return shadow

    def run_validation(at: int) -> dict:
        if not is_main:
            return {}
        metrics, sample = validate(eval_model(), val_clips, cfg.batch_size, device, dtype)
        emit({"kind": "val", "step": at, **metrics})
        write_sample(out_dir / SAMPLES_DIR / f"step_{at:07d}", sample)
        pred = f", pred {metrics['psnr_pred']:.2f} dB (copy-last {metrics['psnr_copy_last']:.2f})" \
            if "psnr_pred" in metrics else ""
        say(f"step {at}: val PSNR recon {metrics['psnr_recon']:.2f} dB{pred}")
        return metrics

    def save_checkpoint(at: int) -> None:
        rng = [_rng_state(k_rng, noise_gen)]
        if dist_info.enabled:
            gathered: list = [None] * dist_info.world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not is_main:
            return
        state = {
            "format": CKPT_FORMAT, "step": at, "samples_per_rank": at * per_step, "world": dist_info.world,
            "train_config": cfg.to_dict(), "model": vae.state_dict(), "disc": disc.state_dict(),
            "opt": opt.state_dict(), "disc_opt": disc_opt.state_dict(), "sched": sched.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "rng": rng,
            "skipped_files": sorted(skipped_files),
        }
        _atomic_torch_save(state, out_dir / CKPT_DIR / f"step_{at:07d}.pt")
        for old in list_checkpoints(out_dir)[: -cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)

    # ---- signals: the first SIGINT/SIGTERM asks for a clean stop at the next step boundary
    stop = {"requested": False}
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            if stop["requested"] and signum == signal.SIGINT:
                raise KeyboardInterrupt
            stop["requested"] = True
            say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                "(Ctrl-C again to abort)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, handler)

    groups = num_groups(cfg.frames, vae.config.temporal_compression)
    start_step, last_val, status = step, {}, "finished"
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not is_main, dynamic_ncols=True, unit="step",
               file=sys.stderr)
    update_time, steps_since_log = 0.0, 0
    try:
        while True:
            # -- before update `step`: validation, checkpoint, stop
            fresh = step != start_step
            if step == cfg.steps or (step % cfg.val_every == 0 and (fresh or not resume)):
                last_val = run_validation(step) or last_val
            stop_now = _agree(stop["requested"], dist_info, device)
            if step == cfg.steps or stop_now or (step % cfg.ckpt_every == 0 and fresh):
                save_checkpoint(step)
            if dist_info.enabled:
                dist.barrier()
            if step == cfg.steps:
                break
            if stop_now:
                status = "interrupted"
                say(f"interrupted at step {step}; continue with: pvvae train --resume {out_dir}")
                break

            # -- update `step`
            t_update = time.perf_counter()
            gan_on = use_gan and step >= cfg.gan_start_step
            dropped = sample_num_dropped(groups, cfg.drop_ratio, k_rng)
            log_terms: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                x, skipped = next(batches)
                for msg in skipped:
                    path = msg.split(": ", 1)[0]
                    if path not in skipped_files:
                        skipped_files.add(path)
                        warn(f"skipped {msg}")
                x = x.to(device, non_blocking=True)
                last_micro = micro == cfg.grad_accum - 1
                sync = contextlib.nullcontext() if (last_micro or not dist_info.enabled) else model.no_sync()
                with sync:
                    with autocast(device, dtype):
                        out = model(x, dropped, sample=True, generator=noise_gen,
                                    encoder_grad=cfg.stage != "decoder")
                        posterior = out.posterior if cfg.stage != "decoder" else None
                        terms = reconstruction_terms(out.recon, x, posterior, weights, lpips,
                                                     pixels_per_sample=x[0, :, : out.kept].numel())
                        loss = weighted_sum(terms, weights)
                        if gan_on:
                            disc.requires_grad_(False)  # the generator's loss must not train D
                            terms["gan"] = generator_adv_loss(disc(out.recon))
                            scale = adaptive_gan_weight(loss, terms["gan"], vae.decoder.conv_out.weight) \
                                if cfg.gan_adaptive else torch.ones((), device=device)
                            loss = loss + cfg.gan_weight * scale * terms["gan"]
                            log_terms["gan_scale"] = log_terms.get("gan_scale", 0.0) + float(scale) / cfg.grad_accum
                    (loss / cfg.grad_accum).backward()
                for name, value in terms.items():
                    log_terms[name] = log_terms.get(name, 0.0) + float(value.detach()) / cfg.grad_accum
                log_terms["loss"] = log_terms.get("loss", 0.0) + float(loss.detach()) / cfg.grad_accum
                if gan_on:
                    disc.requires_grad_(True)
                    d_sync = contextlib.nullcontext() if (last_micro or not dist_info.enabled) else disc_ddp.no_sync()
                    with d_sync:
                        with autocast(device, dtype):
                            logits = disc_ddp(torch.cat([x, out.recon.detach()]))
                            d_loss = hinge_d_loss(logits[: x.shape[0]], logits[x.shape[0]:])
                        (d_loss / cfg.grad_accum).backward()
                    log_terms["d_loss"] = log_terms.get("d_loss", 0.0) + float(d_loss.detach()) / cfg.grad_accum
            if cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip))
            else:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, float("inf")))
            lr = sched.get_last_lr()[0]
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if gan_on:
                disc_opt.step()
                disc_opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(vae)

            # Throughput counts update time only (data wait included; validation and checkpoints excluded).
            steps_since_log += 1
            update_time += time.perf_counter() - t_update
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log_terms = _mean_across_ranks(log_terms, dist_info, device)
                elapsed = update_time
                # Loss terms are those computed at this step: `gan` and `d_loss` appear from gan_start_step on.
                record = {"kind": "train", "step": step, **log_terms, "dropped": dropped, "lr": lr,
                          "grad_norm": grad_norm, "sec_per_step": elapsed / steps_since_log,
                          "samples_per_s": steps_since_log * per_step * dist_info.world / elapsed,
                          "skipped_files": len(skipped_files)}
                if device.type == "cuda":
                    record["max_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                emit(record)
                update_time, steps_since_log = 0.0, 0
            bar.set_postfix(loss=f"{log_terms['loss']:.4f}", lr=f"{lr:.2e}", k=dropped, refresh=False)
            bar.update(1)
            step += 1
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
        for sig, old in old_handlers.items():
            signal.signal(sig, old)

    result = TrainResult(status, step, out_dir, last_val=last_val)
    if status == "finished":
        export = eval_model()
        hashes = [weights_hash(export)]
        if dist_info.enabled:
            gathered = [None] * dist_info.world
            dist.all_gather_object(gathered, hashes[0])
            hashes = gathered
        result.rank_weight_hashes = hashes
        if is_main:
            result.weights_dir = export.save_pretrained(out_dir / WEIGHTS_DIR, model_card=model_card(cfg, step,
                                                                                                     last_val))
            emit({"kind": "final", "step": step, "weights": str(result.weights_dir), "rank_weight_hashes": hashes,
                  "skipped_files": sorted(skipped_files)})
            say(f"exported {result.weights_dir}")
    if dist_info.enabled:
        dist.barrier()
    return result


def _worker_ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it (clean stop), workers keep serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _agree(flag: bool, dist_info: DistInfo, device: torch.device) -> bool:
    """True on every rank if any rank asks to stop (signals may reach the ranks at different steps)."""
    if not dist_info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _mean_across_ranks(values: dict[str, float], dist_info: DistInfo, device: torch.device) -> dict[str, float]:
    if not dist_info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / dist_info.world for k, v in zip(keys, t.tolist(), strict=True)}


def _load_latest(checkpoints: list[Path], warn: Callable[[str], None]) -> dict:
    """The newest checkpoint that loads (an older one if the newest is damaged)."""
    for path in reversed(checkpoints):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: fall back to an older one
            warn(f"cannot load checkpoint {path} ({type(e).__name__}: {e}); trying an older one")
            continue
        if ckpt.get("format") != CKPT_FORMAT:
            raise TrainError(f"{path}: checkpoint format {ckpt.get('format')!r} is not supported "
                             f"(this pvvae writes {CKPT_FORMAT})")
        return ckpt
    raise TrainError(f"no loadable checkpoint among {[str(p) for p in checkpoints]}")


def _check_resumable(saved: dict, cfg: TrainConfig, out_dir: Path) -> None:
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_OVERRIDES and saved.get(k) != now[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise TrainError(f"{out_dir}: cannot resume with a different configuration ({diffs}); only "
                         f"{', '.join(RESUMABLE_OVERRIDES)} may change")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a kill leaves some), so the log reads as
    one uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if (rec.get("kind") == "train" and rec["step"] < step) or (rec.get("kind") == "val" and rec["step"] <= step):
            keep.append(line)
    _atomic_write(path, ("\n".join(keep) + "\n" if keep else "").encode())
