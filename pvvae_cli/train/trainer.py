"""The training loop of all three PV-VAE stages: ``train(cfg, out_dir)``.

Read top to bottom: set up (distributed, model, losses, optimisers, data), restore a checkpoint if resuming,
then one loop over optimiser steps with validation, checkpoints and logging, then export. The step convention
is nanoGPT's: ``step`` counts completed optimiser updates; the update that takes ``step`` from s to s + 1 is
logged as ``step = s`` in ``metrics.jsonl`` and uses the adversarial loss iff ``s >= gan_start_step``;
validation and checkpoints at ``step = s`` happen *before* that update (so ``step = 0`` is the initial model).
The run folder's layout is ``checkpoints.py``'s; validation samples are ``validation.py``'s.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.codec.latents import weights_hash
from pvvae_cli.runtime import distributed as dist
from pvvae_cli.runtime.device import autocast
from pvvae_cli.train import checkpoints as ckpts
from pvvae_cli.train import losses
from pvvae_cli.train.build import (
    build_disc_optimizer,
    build_optimizer,
    build_vae,
    fit_shortcut,
    trainable_parameters,
)
from pvvae_cli.train.config import RESUMABLE_OVERRIDES, TrainConfig, default_lr
from pvvae_cli.train.data import make_dataset, make_loader
from pvvae_cli.train.discriminator import PatchDiscriminator3D
from pvvae_cli.train.model_card import model_card
from pvvae_cli.train.objective import PredictiveVAE, num_groups, sample_num_dropped
from pvvae_cli.train.run_log import open_run, precision_note
from pvvae_cli.train.state import EMA, restore_rng, rng_state
from pvvae_cli.train.stop import StopOnSignal, worker_ignore_stop_signals
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
    from tqdm import tqdm

    out_dir = Path(out_dir)
    dist_info, device, dtype, run_log = open_run(out_dir, cfg.device, cfg.precision, quiet, log)
    is_main = dist_info.is_main

    # ---- things that can fail fast, before anything is written
    # MetricUnavailable (with the fix) when the network's weights are absent: before anything is written.
    perceptual = (losses.build_perceptual_loss(cfg.perceptual, cfg.lpips_net).to(device)
                  if cfg.loss_weights["perceptual"] > 0 else None)
    checkpoints = ckpts.check_run_folder(out_dir, resume)

    # ---- model, discriminator, optimisers
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    vae = build_vae(cfg).to(device)
    tc = vae.config.temporal_compression
    cfg.check_frames(tc)  # --init weights: their factor is known only now
    if cfg.lr is None:  # the preset's rate (of --init weights too: their config keeps the preset name)
        cfg = cfg.replace(lr=default_lr(vae.config.name))
    # ---- data (a pure function of seed and position: built after the model, it draws nothing from torch's RNG)
    dataset = make_dataset(cfg.data, cfg.frames, cfg.size, cfg.frame_stride, seed=cfg.seed, temporal_compression=tc,
                           scale_max=cfg.scale_max)
    val_clips = validation_clips(cfg, tc) if is_main else None
    # Every rank fits the same PCA (the data is a function of the position); before the EMA copies the weights.
    if cfg.shortcut_pca and not resume:
        fit_shortcut(vae, dataset, cfg.shortcut_pca)

    trainable = trainable_parameters(vae, cfg.stage, cfg.freeze_shortcut)
    opt, sched = build_optimizer(cfg, trainable)
    disc = PatchDiscriminator3D(channels=cfg.disc_channels, num_layers=cfg.disc_layers).to(device)
    disc_opt = build_disc_optimizer(cfg, disc)
    ema = EMA(vae, cfg.ema_decay) if cfg.ema_decay > 0 else None
    use_gan = cfg.gan_weight > 0
    k_rng = random.Random(cfg.seed)  # number of dropped groups: the same draw on every rank
    noise_gen = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + dist_info.rank)  # posterior samples
    # What a checkpoint holds besides the step and config; the names are checkpoint keys, hence permanent.
    stateful = {"model": vae, "disc": disc, "opt": opt, "disc_opt": disc_opt, "sched": sched}
    if ema is not None:
        stateful["ema"] = ema
    generators = {"k_rng": k_rng, "noise": noise_gen}

    step, skipped_files = 0, set()
    if resume:
        ckpt = ckpts.load_latest(checkpoints, run_log.warn)
        ckpts.check_resumable(ckpt["train_config"], cfg.to_dict(), RESUMABLE_OVERRIDES, out_dir)
        for name, obj in stateful.items():
            obj.load_state_dict(ckpt[name])
        step = ckpt["step"]
        skipped_files = set(ckpt.get("skipped_files", []))
        # k_rng draws the same k on every rank, so it continues even when the number of processes changed
        restore_rng(ckpt["rng"], dist_info.rank, dist_info.world, generators, shared=("k_rng",), warn=run_log.warn)
        run_log.say(f"resuming {out_dir} at step {step}")
    dist.barrier(dist_info)  # every rank has checked the run folder before rank 0 writes to it
    if is_main:
        ckpts.prepare_run_folder(out_dir, cfg.to_dict(), resumed_at=step if resume else None)

    model = dist.wrap_ddp(PredictiveVAE(vae), dist_info, device)
    disc_ddp = dist.wrap_ddp(disc, dist_info, device)
    per_step = cfg.batch_size * cfg.grad_accum
    # this rank's slice of the global sample stream, from where the run stands
    batches = iter(make_loader(dataset, cfg.batch_size, cfg.workers, start=step * per_step, rank=dist_info.rank,
                               world=dist_info.world, worker_init_fn=worker_ignore_stop_signals))
    weights = cfg.loss_weights  # the adversarial term is added separately (adaptive balance)
    groups = num_groups(cfg.frames, tc)
    start_step, last_val, status = step, {}, "finished"
    # No bar when stderr is not a terminal: cursor escapes in a log file (the logged lines remain).
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not is_main or not sys.stderr.isatty(), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    update_time, steps_since_log = 0.0, 0
    if note := precision_note(cfg.precision, device, dtype):
        run_log.say(note)
    with StopOnSignal(run_log.say) as stop, contextlib.closing(bar):
        while True:
            # -- before update `step`: validation, checkpoint, stop
            fresh = step != start_step
            if is_main and (step == cfg.steps or (step % cfg.val_every == 0 and (fresh or not resume))):
                scored = vae if ema is None else ema.averaged(vae)  # with EMA, validate (and export) its weights
                last_val, sample = validate(scored, val_clips, cfg.batch_size, device, dtype, perceptual)
                run_log.write({"kind": "val", "step": step, **last_val})
                write_sample(out_dir / ckpts.SAMPLES_DIR / f"step_{step:07d}", sample)
                run_log.say(f"step {step}: {summary(last_val)}")
            stop_now = dist.any_rank(stop.requested, dist_info, device)
            if step == cfg.steps or stop_now or (step % cfg.ckpt_every == 0 and fresh):
                rng = dist.gather_objects(rng_state(generators), dist_info)  # every rank's streams
                if is_main:
                    ckpts.save_checkpoint(out_dir, step, {
                        "samples_per_rank": step * per_step, "world": dist_info.world, "train_config": cfg.to_dict(),
                        "ema": None, **{name: obj.state_dict() for name, obj in stateful.items()}, "rng": rng,
                        "skipped_files": sorted(skipped_files)}, keep=cfg.keep_checkpoints)
            dist.barrier(dist_info)
            if step == cfg.steps:
                break
            if stop_now:
                status = "interrupted"
                command = "finetune-decoder" if cfg.stage == "decoder" else "train"  # the command that resumes it
                run_log.say(f"interrupted at step {step}; continue with: pvvae {command} --resume {out_dir}")
                break

            # -- update `step`: grad_accum micro-batches, then one optimiser step
            t_update = time.perf_counter()
            gan_on = use_gan and step >= cfg.gan_start_step
            dropped = sample_num_dropped(groups, cfg.drop_ratio, k_rng)
            log_terms: dict[str, float] = {}  # means over the micro-batches
            for micro in range(cfg.grad_accum):
                x, skipped = next(batches)
                for msg in skipped:
                    path = msg.split(": ", 1)[0]
                    if path not in skipped_files:
                        skipped_files.add(path)
                        run_log.warn(f"skipped {msg}")
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
                    _accumulate(log_terms, name, value.detach(), cfg.grad_accum)
                if gan_on:
                    disc.requires_grad_(True)
                    with contextlib.nullcontext() if last_micro else disc_ddp.no_sync():
                        with autocast(device, dtype):
                            logits = disc_ddp(torch.cat([x, out.recon.detach()]))
                            d_loss = losses.hinge_d_loss(logits[: x.shape[0]], logits[x.shape[0]:])
                        (d_loss / cfg.grad_accum).backward()
                    _accumulate(log_terms, "d_loss", d_loss.detach(), cfg.grad_accum)
            # clip_grad_norm_ with an infinite bound only measures the norm (logged)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip or float("inf")))
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
                log_terms = dist.mean_across_ranks(log_terms, dist_info, device)
                # Loss terms are those computed at this step: `gan` and `d_loss` appear from gan_start_step on.
                record = {"kind": "train", "step": step, **log_terms, "dropped": dropped, "lr": lr,
                          "grad_norm": grad_norm, "sec_per_step": update_time / steps_since_log,
                          "samples_per_s": steps_since_log * per_step * dist_info.world / update_time,
                          "skipped_files": len(skipped_files)}
                if device.type == "cuda":
                    record["max_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                run_log.write(record)
                update_time, steps_since_log = 0.0, 0
            bar.set_postfix(loss=f"{log_terms['loss']:.4f}", lr=f"{lr:.2e}", k=dropped, refresh=False)
            bar.update(1)
            step += 1
            if on_step is not None:
                on_step(step)

    result = TrainResult(status, step, out_dir, start_step=start_step, last_val=last_val)
    if status == "finished":
        export = vae if ema is None else ema.averaged(vae)
        result.rank_weight_hashes = dist.gather_objects(weights_hash(export), dist_info)
        if is_main:
            result.weights_dir = export.save_pretrained(out_dir / ckpts.WEIGHTS_DIR,
                                                        model_card=model_card(cfg, step, last_val))
            run_log.write({"kind": "final", "step": step, "weights": str(result.weights_dir),
                           "rank_weight_hashes": result.rank_weight_hashes, "skipped_files": sorted(skipped_files)})
            run_log.say(f"exported {result.weights_dir}")
    dist.finish(dist_info)  # every rank done; leave the process group before the interpreter exits
    return result


def _accumulate(log_terms: dict[str, float], name: str, value, n: int) -> None:
    log_terms[name] = log_terms.get(name, 0.0) + float(value) / n
