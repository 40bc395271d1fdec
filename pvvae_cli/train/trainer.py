"""The training loop of all three PV-VAE stages: ``train(cfg, out_dir)``.

Read top to bottom: set up (distributed, model, losses, optimisers, data), restore a checkpoint if resuming,
then one loop over optimiser steps with validation, checkpoints and logging, then export. The step convention
is nanoGPT's: ``step`` counts completed optimiser updates; the update that takes ``step`` from s to s + 1 is
logged as ``step = s`` in ``metrics.jsonl`` and uses the adversarial loss iff ``s >= gan_start_step``;
validation and checkpoints at ``step = s`` happen *before* that update (so ``step = 0`` is the initial model).
The loop itself (checkpoints, resume, stop, logging, export) is the run engine's (``pvvae_cli.engine``), shared
with ``gen train``; this file is the VAE step. Validation samples are ``validation.py``'s.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.engine import checkpoints as ckpts
from pvvae_cli.engine.ema import EMA
from pvvae_cli.engine.run import Run, Update
from pvvae_cli.engine.stop import worker_ignore_stop_signals
from pvvae_cli.runtime import distributed as dist
from pvvae_cli.runtime.device import autocast
from pvvae_cli.train import losses
from pvvae_cli.train.build import (
    build_disc_optimizer,
    build_optimizer,
    build_vae,
    enable_grad_checkpointing,
    fit_shortcut,
    trainable_parameters,
)
from pvvae_cli.train.config import RESUMABLE_OVERRIDES, TrainConfig, default_lr
from pvvae_cli.train.data import make_dataset, make_loader
from pvvae_cli.train.discriminator import PatchDiscriminator3D
from pvvae_cli.train.model_card import model_card
from pvvae_cli.train.objective import PredictiveVAE, kept_frames, max_dropped, num_groups, sample_num_dropped
from pvvae_cli.train.validation import summary, validate, validation_clips, write_sample


@dataclass
class TrainResult:
    status: str  # "finished" | "interrupted"
    step: int  # optimiser updates done when the run returned
    out_dir: Path
    weights_dir: Path | None = None
    last_val: dict = field(default_factory=dict)
    rank_weight_hashes: list[str] = field(default_factory=list)  # codec.latents.weights_hash of each replica
    start_step: int = 0  # where this call started: the checkpoint's step when resuming


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
    out_dir = Path(out_dir)
    run = Run(out_dir, cfg.device, cfg.precision, resume, quiet, log, strict_fp32=cfg.strict_fp32)
    device, dtype, dist_info = run.device, run.dtype, run.dist

    # ---- things that can fail fast, before anything is written
    # MetricUnavailable (with the fix) when the network's weights are absent: before anything is written.
    perceptual = (losses.build_perceptual_loss(cfg.perceptual, cfg.lpips_net).to(device)
                  if cfg.loss_weights["perceptual"] > 0 else None)

    # ---- model, discriminator, optimisers
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    vae = build_vae(cfg).to(device)
    tc = vae.config.temporal_compression
    cfg.check_frames(tc)  # --init weights: their factor is known only now
    if cfg.lr is None:  # the preset's rate (of --init weights too: their config keeps the preset name)
        cfg = cfg.replace(lr=default_lr(vae.config.name))
    if cfg.grad_checkpoint:
        enable_grad_checkpointing(vae)
    # ---- data (a pure function of seed and position: built after the model, it draws nothing from torch's RNG)
    dataset = make_dataset(cfg.data, cfg.frames, cfg.size, cfg.frame_stride, seed=cfg.seed, temporal_compression=tc,
                           scale_max=cfg.scale_max)
    val_clips = validation_clips(cfg, tc) if run.is_main else None
    # Rank 0 fits the PCA (it decodes --shortcut-pca clips) and hands it to the others; before the EMA copies the
    # weights, so every rank's EMA starts from it too.
    if cfg.shortcut_pca and not resume:
        if run.is_main:
            fit_shortcut(vae, dataset, cfg.shortcut_pca)
        dist.broadcast_module(vae, dist_info)

    trainable = trainable_parameters(vae, cfg.stage, cfg.freeze_shortcut)
    opt, sched = build_optimizer(cfg, trainable)
    disc = PatchDiscriminator3D(channels=cfg.disc_channels, num_layers=cfg.disc_layers).to(device)
    disc_opt = build_disc_optimizer(cfg, disc)
    ema = EMA(vae, cfg.ema_decay) if cfg.ema_decay > 0 else None
    use_gan = cfg.gan_weight > 0
    k_rng = random.Random(cfg.seed)  # number of dropped groups: the same draw on every rank
    noise_gen = torch.Generator(device).manual_seed(_noise_seed(cfg.seed, dist_info.rank))  # posterior samples
    stateful = {"model": vae, "disc": disc, "opt": opt, "disc_opt": disc_opt, "sched": sched}  # checkpoint keys
    if ema is not None:
        stateful["ema"] = ema
    run.track(stateful, {"k_rng": k_rng, "noise": noise_gen})

    skipped_files: set[str] = set()
    if resume:
        # k_rng draws the same k on every rank, so it continues even when the number of processes changed; the
        # noise stream restarts from (seed, rank, step) on another kind of device
        ckpt = run.restore(cfg.to_dict(), RESUMABLE_OVERRIDES, shared=("k_rng",),
                           reseed=lambda _name: _noise_seed(cfg.seed, dist_info.rank, run.step))
        skipped_files = set(ckpt.get("skipped_files", []))
    run.prepare(cfg.to_dict())

    groups = num_groups(cfg.frames, tc)
    model = PredictiveVAE(vae)
    if cfg.compile:
        # in place (state-dict keys unchanged); static shapes: one graph per number of dropped groups, as dynamic
        # shapes fail in inductor on these convolutions
        model.compile(dynamic=False)
    # A 1-frame input leaves temporal layers without a gradient (IV-VAE's and Wan's time_conv, the block shortcut's
    # temporal rest): the image stage always, the predictive stage whenever it keeps only the first frame. DDP must
    # be told, or it fails at the next step waiting for their reduction.
    fewest_kept = kept_frames(cfg.frames, max_dropped(groups, cfg.drop_ratio), tc)
    one_frame = cfg.stage == "image" or fewest_kept == 1
    model = dist.wrap_ddp(model, dist_info, device, find_unused_parameters=one_frame)
    disc_ddp = dist.wrap_ddp(disc, dist_info, device)
    per_step = cfg.batch_size * cfg.grad_accum
    # this rank's slice of the global sample stream, from where the run stands
    batches = iter(make_loader(dataset, cfg.batch_size, cfg.workers, start=run.step * per_step, rank=dist_info.rank,
                               world=dist_info.world, worker_init_fn=worker_ignore_stop_signals,
                               pin_memory=device.type == "cuda"))
    weights = cfg.loss_weights  # the adversarial term is added separately (adaptive balance)

    def update(step: int) -> Update:
        """Optimiser update ``step``: ``grad_accum`` micro-batches, then one step of the VAE (and discriminator)."""
        gan_on = use_gan and step >= cfg.gan_start_step
        dropped = sample_num_dropped(groups, cfg.drop_ratio, k_rng)
        log_terms: dict[str, torch.Tensor] = {}  # means over the micro-batches, on the device
        for micro in range(cfg.grad_accum):
            x, skipped = next(batches)
            for msg in skipped:
                path = msg.split(": ", 1)[0]
                if path not in skipped_files:
                    skipped_files.add(path)
                    run.log.warn(f"skipped {msg}")
            x = x.to(device, non_blocking=True)
            # DDP all-reduces gradients on the last micro-batch only
            last_micro = micro == cfg.grad_accum - 1 or not dist_info.enabled
            with contextlib.nullcontext() if last_micro else model.no_sync():
                with autocast(device, dtype):
                    out = model(x, dropped, sample=True, generator=noise_gen, encoder_grad=cfg.stage != "decoder")
                    posterior = out.posterior if cfg.stage != "decoder" else None
                    terms = losses.reconstruction_terms(out.recon, x, posterior, weights, perceptual,
                                                        pixels_per_sample=x[0, :, : out.kept].numel())
                    loss = losses.weighted_sum(terms, weights)
                    if gan_on:
                        disc.requires_grad_(False)  # the generator's loss must not train D
                        terms["gan"] = losses.generator_adv_loss(disc(out.recon))
                        scale = losses.adaptive_gan_weight(loss, terms["gan"], vae.last_decoder_weight()) \
                            if cfg.gan_adaptive else torch.ones((), device=device)
                        loss = loss + cfg.gan_weight * scale * terms["gan"]
                        _accumulate(log_terms, "gan_scale", scale, cfg.grad_accum)
                (loss / cfg.grad_accum).backward()
            for name, value in {**terms, "loss": loss}.items():
                _accumulate(log_terms, name, value, cfg.grad_accum)
            if gan_on:
                disc.requires_grad_(True)
                with contextlib.nullcontext() if last_micro else disc_ddp.no_sync():
                    with autocast(device, dtype):
                        logits = disc_ddp(torch.cat([x, out.recon.detach()]))
                        d_loss = losses.hinge_d_loss(logits[: x.shape[0]], logits[x.shape[0]:])
                    (d_loss / cfg.grad_accum).backward()
                _accumulate(log_terms, "d_loss", d_loss, cfg.grad_accum)
        # clip_grad_norm_ with an infinite bound only measures the norm (logged); a device tensor: no host sync
        log_terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip or float("inf"))
        lr = sched.get_last_lr()[0]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if gan_on:
            disc_opt.step()
            disc_opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(vae)
        # Loss terms are those computed in the interval: `gan` and `d_loss` appear from gan_start_step on.
        return Update(log_terms, {"dropped": dropped, "lr": lr, "skipped_files": len(skipped_files)}, per_step)

    def evaluate(step: int) -> dict:
        scored = vae if ema is None else ema.averaged(vae)  # with EMA, validate (and export) its weights
        values, sample = validate(scored, val_clips, cfg.batch_size, device, dtype, perceptual)
        write_sample(out_dir / ckpts.SAMPLES_DIR / f"step_{step:07d}", sample)
        return values

    def extras() -> dict:
        return {"samples_per_rank": run.step * per_step, "train_config": cfg.to_dict(), "ema": None,
                "skipped_files": sorted(skipped_files)}

    command = "finetune-decoder" if cfg.stage == "decoder" else "train"  # the command that resumes it
    try:
        status, last_val = run.loop(
            update, steps=cfg.steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
            keep_checkpoints=cfg.keep_checkpoints, checkpoint_extras=extras, evaluate=evaluate,
            eval_every=cfg.val_every, eval_kind="val", describe=summary,
            resume_hint=f"pvvae {command} --resume {out_dir}", on_step=on_step)
    finally:
        # The workers ignore SIGTERM (a scheduler's stop is the main process's to handle), so an exception that
        # keeps the loader alive in its traceback would leave the interpreter waiting for them at exit: end them now.
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    result = TrainResult(status, run.step, out_dir, start_step=run.start_step, last_val=last_val)
    if status == "finished":
        export = vae if ema is None else ema.averaged(vae)
        result.weights_dir, result.rank_weight_hashes = run.export(
            export, lambda m: m.save_pretrained(out_dir / ckpts.WEIGHTS_DIR,
                                                model_card=model_card(cfg, run.step, last_val)),
            final={"skipped_files": sorted(skipped_files)})
    run.finish()  # every rank done; leave the process group before the interpreter exits
    return result


def _noise_seed(seed: int, rank: int, step: int = 0) -> int:
    """The posterior-noise stream of a rank (and, after a change of device kind on resume, of a step)."""
    return seed * 1_000_003 + rank + step * 7_919


def _accumulate(log_terms: dict[str, torch.Tensor], name: str, value: torch.Tensor, n: int) -> None:
    value = value.detach().float() / n
    log_terms[name] = log_terms[name] + value if name in log_terms else value
