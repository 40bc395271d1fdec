"""The ``gen train`` loop: ``train_gen(cfg, out_dir)``, on the run machinery of VAE training.

Reused, not copied: the run folder, checkpoints and their atomic writes (``train.checkpoints``), the metrics log
(``train.run_log``), the clean stop on Ctrl-C / SIGTERM (``train.stop``), EMA, the lr schedule and the random
state capture (``train.state``), torchrun DDP (``runtime.distributed``), device and autocast
(``runtime.device``). Step convention as there: ``step`` counts optimiser updates; the update from s to s + 1 is
logged as ``step = s``; checkpoints and evaluations at ``step = s`` happen before that update.

Exact resume: a batch is a pure function of ``(seed, position)`` (``LatentSet.indices``) and every draw of the
flow (t, noise, label dropout) comes from one generator saved in the checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pvvae_cli.codec.latents import weights_hash
from pvvae_cli.gen.config import GenConfig, get_preset
from pvvae_cli.gen.data import LatentSet, load_latent_set, normalize
from pvvae_cli.gen.evaluation import EvalHook
from pvvae_cli.gen.flow import NUM_T_BINS, flow_loss, loss_by_t_bin
from pvvae_cli.gen.model import LatteDiT
from pvvae_cli.gen.train_config import RESUMABLE_OVERRIDES, GenTrainConfig
from pvvae_cli.gen.weights import save_gen
from pvvae_cli.runtime import distributed as dist
from pvvae_cli.runtime.device import autocast
from pvvae_cli.train import checkpoints as ckpts
from pvvae_cli.train.checkpoints import TrainError
from pvvae_cli.train.run_log import RunLog, open_run, precision_note
from pvvae_cli.train.state import EMA, lr_factor, restore_rng, rng_state
from pvvae_cli.train.stop import StopOnSignal


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
    from tqdm import tqdm

    out_dir = Path(out_dir)
    dist_info, device, dtype, run_log = open_run(out_dir, cfg.device, cfg.precision, quiet, log)
    is_main = dist_info.is_main

    # ---- things that can fail fast, before anything is written
    checkpoints = ckpts.check_run_folder(out_dir, resume)
    data = load_latent_set(cfg.data, cfg.labels, cfg.class_from_folders)
    gen_config = model_config(cfg, data)
    latents = normalize(data.latents, gen_config)  # (N, C, t, h, w) in the model's space, kept on the CPU
    labels = data.labels

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = LatteDiT(gen_config).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    # every draw of the flow: t, noise, label dropout (on the CPU: the same stream whatever the device)
    flow_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + dist_info.rank)
    stateful = {"model": model, "opt": opt, "sched": sched}  # checkpoint keys: permanent
    if ema is not None:
        stateful["ema"] = ema
    generators = {"flow": flow_gen}

    step = 0
    if resume:
        ckpt = ckpts.load_latest(checkpoints, run_log.warn)
        ckpts.check_resumable(ckpt["train_config"], cfg.to_dict(), RESUMABLE_OVERRIDES, out_dir)
        if ckpt["gen_config"] != gen_config.to_dict():
            raise TrainError(f"{cfg.data}: the latent set changed since the run started (its shape, statistics or "
                             f"labels differ from {out_dir}'s checkpoint); resume with the same files")
        for name, obj in stateful.items():
            obj.load_state_dict(ckpt[name])
        step = ckpt["step"]
        restore_rng(ckpt["rng"], dist_info.rank, dist_info.world, generators, warn=run_log.warn)
        run_log.say(f"resuming {out_dir} at step {step}")
    dist.barrier(dist_info)
    if is_main:
        ckpts.prepare_run_folder(out_dir, cfg.to_dict(), resumed_at=step if resume else None)
        if not resume:
            run_log.write({"kind": "data", "step": 0, "files": len(data), "latent_shape": list(data.shape),
                           "classes": list(data.class_names), "parameters": sum(p.numel() for p in params)})

    ddp_model = dist.wrap_ddp(model, dist_info, device)
    if note := precision_note(cfg.precision, device, dtype):
        run_log.say(note)
    start_step, status, last_loss, last_eval = step, "finished", float("nan"), {}
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or not is_main, dynamic_ncols=True, unit="step",
               file=sys.stderr)
    update_time, interval = 0.0, _Interval()
    with StopOnSignal(run_log.say) as stop:
        while True:
            fresh = step != start_step
            if is_main and eval_hook is not None and cfg.eval_every and (
                    step == cfg.steps or (step % cfg.eval_every == 0 and (fresh or not resume))):
                scored = model if ema is None else ema.averaged(model)
                scored.eval()
                with autocast(device, dtype):
                    last_eval = eval_hook(scored, step)
                model.train()
                run_log.write({"kind": "eval", "step": step, **last_eval})
                run_log.say(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
            stop_now = dist.any_rank(stop.requested, dist_info, device)
            if step == cfg.steps or stop_now or (step % cfg.ckpt_every == 0 and fresh):
                rng = dist.gather_objects(rng_state(generators), dist_info)
                if is_main:
                    ckpts.save_checkpoint(out_dir, step, {
                        "train_config": cfg.to_dict(), "gen_config": gen_config.to_dict(), "world": dist_info.world,
                        "ema": None, **{name: obj.state_dict() for name, obj in stateful.items()}, "rng": rng},
                        keep=cfg.keep_checkpoints)
            dist.barrier(dist_info)
            if step == cfg.steps:
                break
            if stop_now:
                status = "interrupted"
                run_log.say(f"interrupted at step {step}; continue with: pvvae gen train --resume {out_dir}")
                break

            # -- update `step`
            t0 = time.perf_counter()
            idx = data.indices(step * cfg.batch_size, cfg.batch_size, cfg.seed, dist_info.rank, dist_info.world)
            x0 = latents[idx].to(device, non_blocking=True)
            y = labels[idx].to(device) if labels is not None else None
            with autocast(device, dtype):
                out = flow_loss(ddp_model, x0, y, flow_gen, cfg.t_mean, cfg.t_std, cfg.time_shift,
                                cfg.label_dropout, gen_config.num_classes)
            out.loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf")))
            lr = sched.get_last_lr()[0]
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if ema is not None:
                ema.update(model)
            update_time += time.perf_counter() - t0
            last_loss = float(out.loss.detach())
            interval.add(last_loss, grad_norm, loss_by_t_bin(out.per_sample, out.t))

            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                record = interval.summary(dist_info, device)
                record.update({"kind": "train", "step": step, "lr": lr, "sec_per_step": update_time / interval.n,
                               "samples_per_s": interval.n * cfg.batch_size * dist_info.world / update_time})
                run_log.write(record)
                update_time, interval = 0.0, _Interval()
            bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            bar.update(1)
            step += 1
            if on_step is not None:
                on_step(step)
    bar.close()

    result = GenTrainResult(status, step, out_dir, start_step=start_step, last_loss=last_loss, last_eval=last_eval)
    if status == "finished":
        export = model if ema is None else ema.averaged(model)
        hashes = dist.gather_objects(weights_hash(export), dist_info)
        if is_main:
            result.weights_dir = save_gen(export.eval(), out_dir / ckpts.WEIGHTS_DIR,
                                          model_card=gen_model_card(cfg, gen_config, step, data, last_eval))
            run_log.write({"kind": "final", "step": step, "weights": str(result.weights_dir),
                           "rank_weight_hashes": hashes})
            run_log.say(f"exported {result.weights_dir}")
            if last_eval:
                _plot(out_dir, run_log)
    dist.finish(dist_info)  # every rank done; leave the process group before the interpreter exits
    return result


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


class _Interval:
    """Sums over the steps between two log lines: loss, grad norm, and per-t-bin loss sums and counts."""

    def __init__(self) -> None:
        self.n, self.loss, self.grad_norm = 0, 0.0, 0.0
        self.bins = {f"loss_t{k}": [0.0, 0] for k in range(NUM_T_BINS)}

    def add(self, loss: float, grad_norm: float, bins: dict[str, tuple[float, int]]) -> None:
        self.n += 1
        self.loss += loss
        self.grad_norm += grad_norm
        for k, (s, c) in bins.items():
            self.bins[k][0] += s
            self.bins[k][1] += c

    def summary(self, dist_info, device) -> dict[str, float]:
        sums = {"loss": self.loss / self.n, "grad_norm": self.grad_norm / self.n}
        for k, (s, c) in self.bins.items():
            sums[k + "_sum"], sums[k + "_n"] = s, float(c)
        sums = dist.mean_across_ranks(sums, dist_info, device)
        out = {"loss": sums["loss"], "grad_norm": sums["grad_norm"]}
        for k in self.bins:  # the mean loss of the bin over the interval (and ranks); absent when it was empty
            if sums[k + "_n"] > 0:
                out[k] = sums[k + "_sum"] / sums[k + "_n"]
        return out


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
