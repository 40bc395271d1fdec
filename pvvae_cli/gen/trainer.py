"""The ``gen train`` loop: ``train_gen(cfg, out_dir)``, the flow-matching step on the run engine.

The run folder, checkpoints, resume, EMA, random-state capture, clean stop on Ctrl-C / SIGTERM, logging and export
are the run engine's (``pvvae_cli.engine``), shared with VAE training; torchrun DDP is ``runtime.distributed``'s,
device and autocast ``runtime.device``'s. Step convention as there: ``step`` counts optimiser updates; the update
from s to s + 1 is logged as ``step = s``; checkpoints and evaluations at ``step = s`` happen before that update.

Exact resume: a batch is a pure function of ``(seed, position)`` (``LatentSet.indices``) and every draw of the
flow (t, noise, label dropout) comes from one generator saved in the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.config_io import ConfigError
from pvvae_cli.engine import checkpoints as ckpts
from pvvae_cli.engine.checkpoints import TrainError
from pvvae_cli.engine.ema import EMA
from pvvae_cli.engine.optim import adamw, warmup_cosine
from pvvae_cli.engine.run import Run, Update
from pvvae_cli.engine.run_log import RunLog
from pvvae_cli.gen.config import GenConfig, get_preset
from pvvae_cli.gen.data import LatentSet, load_latent_set
from pvvae_cli.gen.evaluation import EvalHook
from pvvae_cli.gen.flow import flow_loss, loss_by_t_bin, t_bin_means
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.train_config import RESUMABLE_OVERRIDES, GenTrainConfig
from pvvae_cli.gen.weights import save_gen
from pvvae_cli.runtime import distributed as dist
from pvvae_cli.runtime.device import autocast


@dataclass
class GenTrainResult:
    status: str  # "finished" | "interrupted"
    step: int
    out_dir: Path
    weights_dir: Path | None = None
    start_step: int = 0
    last_loss: float = float("nan")
    last_eval: dict = field(default_factory=dict)


def model_config(cfg: GenTrainConfig, data: LatentSet) -> GenConfig:
    """The preset's architecture with everything the data decide: latent shape, per-channel statistics, classes,
    and the VAE (and clip geometry) recorded in the latent files."""
    mean, std = data.channel_stats()
    c, t, h, w = data.shape
    m = data.meta
    try:
        return get_preset(cfg.preset).replace(
            patch_size=cfg.patch_size, latent_channels=c, latent_frames=t, latent_height=h, latent_width=w,
            latents_mean=mean, latents_std=std, num_classes=len(data.class_names), class_names=data.class_names,
            vae=m.model, vae_config_hash=m.config_hash, vae_tag=m.model_tag, vae_normalized=m.normalized, fps=m.fps,
            encoded_frames=m.encoded_frames, encoded_height=m.encoded_height, encoded_width=m.encoded_width)
    except ValueError as e:
        raise TrainError(f"{cfg.data}: {e}") from e


def train_gen(
    cfg: GenTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    quiet: bool = False,
    eval_hook: EvalHook | None = None,
    on_step: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> GenTrainResult:
    """Train a ``LatteDiT`` on the latent files of ``cfg.data`` into ``out_dir`` (``resume``: continue the run
    there). ``eval_hook(model, step)`` runs on the main process every ``cfg.eval_every`` steps and at the end; its
    numbers go to ``metrics.jsonl`` as ``kind: "eval"`` (this is where FVD/KVD plug in). Raises ``TrainError``,
    ``ConfigError`` or ``GenDataError`` for problems the user can fix, before anything is written."""
    out_dir = Path(out_dir)
    run = Run(out_dir, cfg.device, cfg.precision, resume, quiet, log, strict_fp32=cfg.strict_fp32)
    device, dtype, dist_info = run.device, run.dtype, run.dist

    # ---- things that can fail fast, before anything is written
    data = load_latent_set(cfg.data, cfg.labels, cfg.class_from_folders)
    gen_config = model_config(cfg, data)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = LatteDiT(gen_config).to(device).train()
    if cfg.grad_checkpoint:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError("--grad-checkpoint: this DiT does not support activation checkpointing")
        model.set_grad_checkpointing(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, cfg.lr, cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    # every draw of the flow: t, noise, label dropout (on the CPU: the same stream whatever the device)
    flow_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + dist_info.rank)
    stateful = {"model": model, "opt": opt, "sched": sched}  # checkpoint keys: permanent
    if ema is not None:
        stateful["ema"] = ema
    run.track(stateful, {"flow": flow_gen})

    if resume:
        ckpt = run.restore(cfg.to_dict(), RESUMABLE_OVERRIDES)
        if not _same_model_config(ckpt["gen_config"], gen_config.to_dict()):
            raise TrainError(f"{cfg.data}: the latent set changed since the run started (its shape, statistics or "
                             f"labels differ from {out_dir}'s checkpoint); resume with the same files")
    run.prepare(cfg.to_dict())
    if run.is_main and not resume:
        run.log.write({"kind": "data", "step": 0, "files": len(data), "latent_shape": list(data.shape),
                       "classes": list(data.class_names), "parameters": sum(p.numel() for p in params)})

    step_model = model
    if cfg.compile:
        step_model = torch.compile(model)  # the exported and checkpointed model stays the plain module
    ddp_model = dist.wrap_ddp(step_model, dist_info, device)
    last = {"loss": torch.full((), float("nan"))}

    def update(step: int) -> Update:
        terms: dict[str, torch.Tensor] = {}
        for micro in range(cfg.grad_accum):
            position = (step * cfg.grad_accum + micro) * cfg.batch_size
            idx = data.indices(position, cfg.batch_size, cfg.seed, dist_info.rank, dist_info.world)
            x0 = data.batch(idx, gen_config).to(device, non_blocking=True)
            y = data.labels[idx].to(device, non_blocking=True) if data.labels is not None else None
            last_micro = micro == cfg.grad_accum - 1 or not dist_info.enabled
            with contextlib.nullcontext() if last_micro else ddp_model.no_sync():
                with autocast(device, dtype):
                    out = flow_loss(ddp_model, x0, y, flow_gen, cfg.t_mean, cfg.t_std, cfg.time_shift,
                                    cfg.label_dropout, gen_config.num_classes)
                (out.loss / cfg.grad_accum).backward()
            micro_terms = {"loss": out.loss.detach() / cfg.grad_accum, **loss_by_t_bin(out.per_sample, out.t)}
            for name, value in micro_terms.items():
                terms[name] = terms[name] + value if name in terms else value
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf"))
        lr = sched.get_last_lr()[0]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if ema is not None:
            ema.update(model)
        last["loss"] = terms["loss"]
        return Update(terms, {"lr": lr}, cfg.batch_size * cfg.grad_accum)

    def evaluate(step: int) -> dict:
        scored = model if ema is None else ema.averaged(model)
        scored.eval()
        with autocast(device, dtype):
            values = eval_hook(scored, step)
        model.train()
        return values

    def extras() -> dict:
        return {"train_config": cfg.to_dict(), "gen_config": gen_config.to_dict(), "ema": None}

    status, last_eval = run.loop(
        update, steps=cfg.steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
        keep_checkpoints=cfg.keep_checkpoints, checkpoint_extras=extras,
        evaluate=evaluate if eval_hook is not None else None, eval_every=cfg.eval_every, eval_kind="eval",
        finish_record=t_bin_means, resume_hint=f"pvvae gen train --resume {out_dir}", on_step=on_step)

    result = GenTrainResult(status, run.step, out_dir, start_step=run.start_step, last_loss=float(last["loss"]),
                            last_eval=last_eval)
    if status == "finished":
        export = model if ema is None else ema.averaged(model)
        result.weights_dir, _ = run.export(
            export.eval(), lambda m: save_gen(m, out_dir / ckpts.WEIGHTS_DIR,
                                              model_card=gen_model_card(cfg, gen_config, run.step, data, last_eval)))
        if run.is_main and last_eval:
            _plot(out_dir, run.log)
    run.finish()  # every rank done; leave the process group before the interpreter exits
    return result


def _same_model_config(saved: dict, now: dict) -> bool:
    """The checkpoint's model config equals the one the data give now; the latent statistics within float rounding
    (their summation order changed in 0.10, a run started before must still resume)."""
    stats = ("latents_mean", "latents_std")
    if {k: v for k, v in saved.items() if k not in stats} != {k: v for k, v in now.items() if k not in stats}:
        return False
    for k in stats:
        a, b = saved.get(k), now.get(k)
        if (a is None) != (b is None) or (a is not None and not torch.allclose(
                torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), rtol=1e-9, atol=1e-12)):
            return False
    return True


def _plot(out_dir: Path, run_log: RunLog) -> None:
    """``eval_curve.png`` from every evaluation in the run's log (a resumed run's included)."""
    import json

    from pvvae_cli.gen.plot import EVAL_CURVE, have_matplotlib, plot_eval_curves

    if not have_matplotlib():
        run_log.say(f"no {EVAL_CURVE}: install matplotlib for the plot of the evaluation curves")
        return
    records = [json.loads(line) for line in (out_dir / ckpts.METRICS_FILE).read_text().splitlines() if line]
    if plot_eval_curves(records, out_dir / EVAL_CURVE) is not None:
        run_log.say(f"wrote {out_dir / EVAL_CURVE}")


def gen_model_card(cfg: GenTrainConfig, config: GenConfig, step: int, data: LatentSet, last_eval: dict) -> str:
    """The ``README.md`` beside exported ``gen`` weights: what it models, how it was trained, what was measured."""
    lines = [
        "# pvvae gen: Latte-style latent video diffusion transformer", "",
        f"Preset `{cfg.preset}` ({config.depth} blocks, width {config.hidden_size}, {config.num_heads} heads, patch "
        f"{config.patch_size}), rectified flow (x_t = (1 - t) x0 + t eps, velocity eps - x0), trained for {step} "
        f"steps on {len(data)} latent clips of shape {list(data.shape)} "
        f"({'class-conditional: ' + ', '.join(config.class_names) if config.conditional else 'unconditional'}).",
        "",
        f"- VAE: `{config.vae}` ({config.vae_tag}, config hash {config.vae_config_hash}); clips of "
        f"{config.encoded_frames} frames at {config.encoded_height}x{config.encoded_width}, {config.fps:g} fps",
        "- latent normalisation: per-channel mean/std over the training set (config.json latents_mean/latents_std)",
        f"- optimiser: AdamW lr {cfg.lr}, batch {cfg.batch_size}, precision {cfg.precision}, EMA "
        f"{cfg.ema_decay or 'off'}; label dropout {cfg.label_dropout}; logit-normal t ({cfg.t_mean}, {cfg.t_std}), "
        f"shift {cfg.time_shift}",
    ]
    if last_eval:
        lines += ["", f"Evaluation at step {step} (measured during training): "
                  + ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items())]
    return "\n".join(lines) + "\n"
