"""The skeleton every training run shares (VAE stages and gen): ``Run``.

A trainer builds its model, optimiser and data, registers what a checkpoint holds (``track``), restores it when
resuming (``restore``), and hands ``loop`` one function: ``update(step)``, a single optimiser update. ``loop`` does
the rest in nanoGPT's order: before update ``s`` (so ``step = 0`` is the initial model) it evaluates (main process)
every ``eval_every`` steps, polls the stop flag, writes a checkpoint every ``ckpt_every`` steps and at the end or on
a stop; after the update it logs every ``log_every`` steps. ``export`` writes the weights of a finished run.

What the skeleton guarantees on GPUs and under torchrun:

- Host syncs only at log steps: ``update`` returns its loss terms as device tensors; they are summed on the device
  and brought to the host (one all-reduce, one copy) when a line is logged. The stop flag is polled at every step
  in one process and at log steps under torchrun (an all-reduce there costs a sync).
- A checkpoint holds every rank's random streams, the EMA, the optimiser and the schedule; resuming on another
  kind of device continues with a warning (``engine.rng``); EMA shadows follow the parameters' device
  (``engine.ema``).
- Rank 0 alone evaluates, writes checkpoints and exports while the others wait in a barrier: the process group's
  timeout (``runtime.distributed``) is long enough for multi-GB checkpoints on a slow file system.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed

from pvvae_cli.engine import checkpoints as ckpts
from pvvae_cli.engine.rng import Generators, restore_rng, rng_state
from pvvae_cli.engine.run_log import open_run, precision_note
from pvvae_cli.engine.stop import StopOnSignal
from pvvae_cli.runtime import distributed as dist


@dataclass
class Update:
    """What one optimiser update reports: ``terms`` (device scalars: averaged over the log interval and the ranks,
    synced only at log steps) and ``info`` (host values of this update, logged as they are: the lr, the number of
    dropped groups)."""

    terms: dict[str, torch.Tensor]
    info: dict[str, Any]
    samples: int  # samples this rank consumed in the update (for samples_per_s)


class Run:
    """One run's process side: device and dtype, torchrun's process group, the run folder and its log."""

    def __init__(self, out_dir: str | Path, device: str, precision: str, resume: bool, quiet: bool = False,
                 log: Callable[[str], None] | None = None, strict_fp32: bool = False) -> None:
        from pvvae_cli.runtime.device import apply_precision_policy

        self.out_dir = Path(out_dir)
        # A process group made by the caller (a script running several runs under one torchrun) is theirs to end.
        self._owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        self.dist, self.device, self.dtype, self.log = open_run(self.out_dir, device, precision, quiet, log)
        self.precision_policy = apply_precision_policy(self.device, strict_fp32)
        self.resume = resume
        self.quiet = quiet
        self._checkpoints = ckpts.check_run_folder(self.out_dir, resume)
        self.step = self.start_step = 0
        self.stateful: dict[str, Any] = {}
        self.generators: Generators = {}
        self._precision = precision

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def track(self, stateful: dict[str, Any], generators: Generators) -> None:
        """What a checkpoint holds besides the step and the trainer's extras: objects with ``state_dict`` /
        ``load_state_dict`` and random generators, under names that are checkpoint keys (hence permanent)."""
        self.stateful, self.generators = stateful, generators

    def restore(self, config: dict, may_change: tuple[str, ...], shared: tuple[str, ...] = (),
                reseed: Callable[[str], int] | None = None) -> dict:
        """Load the newest loadable checkpoint into what ``track`` registered and return it. ``config`` (the run's
        config as a dict) may differ from the saved one only in ``may_change``; ``shared`` generators draw the same
        on every rank (they continue when the number of processes changed); ``reseed(name)`` seeds a generator
        whose state came from another device kind."""
        ckpt = ckpts.load_latest(self._checkpoints, self.log.warn)
        ckpts.check_resumable(ckpt["train_config"], config, may_change, self.out_dir)
        for name, obj in self.stateful.items():
            obj.load_state_dict(ckpt[name])
        self.step = self.start_step = ckpt["step"]
        restore_rng(ckpt["rng"], self.dist.rank, self.dist.world, self.generators, shared=shared,
                    warn=self.log.warn, reseed=reseed)
        self.log.say(f"resuming {self.out_dir} at step {self.step}")
        return ckpt

    def prepare(self, config: dict) -> None:
        """Every rank has checked the run folder; now rank 0 creates it and writes the config (with the precision
        policy in force, so a run says whether its fp32 was TF32)."""
        dist.barrier(self.dist)
        if self.is_main:
            ckpts.prepare_run_folder(self.out_dir, config, resumed_at=self.step if self.resume else None)
            self.log.write({"kind": "runtime", "step": self.step, "device": str(self.device),
                            "dtype": str(self.dtype).removeprefix("torch."), "world": self.dist.world,
                            **self.precision_policy})
        if note := precision_note(self._precision, self.device, self.dtype):
            self.log.say(note)

    def loop(self, update: Callable[[int], Update], *, steps: int, log_every: int, ckpt_every: int,
             keep_checkpoints: int, checkpoint_extras: Callable[[], dict], resume_hint: str,
             evaluate: Callable[[int], dict] | None = None, eval_every: int = 0, eval_kind: str = "val",
             describe: Callable[[dict], str] | None = None, finish_record: Callable[[dict], dict] | None = None,
             on_step: Callable[[int], None] | None = None) -> tuple[str, dict]:
        """Run updates until ``steps`` or a stop. Returns ``(status, last evaluation)``, status ``finished`` or
        ``interrupted``. ``finish_record(record)`` turns a logged record's averaged terms into what is written
        (gen's per-t-bin means)."""
        from tqdm import tqdm

        status, last_eval = "finished", {}
        # No bar when stderr is not a terminal: cursor escapes in a log file (the logged lines remain).
        bar = tqdm(total=steps, initial=self.step, disable=self.quiet or not self.is_main or not sys.stderr.isatty(),
                   unit="step", dynamic_ncols=True, file=sys.stderr)
        interval = _Interval()
        with StopOnSignal(self.log.say) as stop, contextlib.closing(bar):
            while True:
                step = self.step
                fresh = step != self.start_step
                # -- before update `step`: evaluation, checkpoint, stop
                if self.is_main and evaluate is not None and eval_every and (
                        step == steps or (step % eval_every == 0 and (fresh or not self.resume))):
                    last_eval = evaluate(step)
                    self.log.write({"kind": eval_kind, "step": step, **last_eval})
                    self.log.say(f"step {step}: " + (describe(last_eval) if describe else
                                                     ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items())))
                # Under torchrun the flag is an all-reduce (a host sync): polled at log steps only.
                poll = not self.dist.enabled or step % log_every == 0 or step == steps
                stop_now = dist.any_rank(stop.requested, self.dist, self.device) if poll else False
                if step == steps or stop_now or (step % ckpt_every == 0 and fresh):
                    self.save_checkpoint(checkpoint_extras(), keep_checkpoints)
                dist.barrier(self.dist)
                if step == steps:
                    break
                if stop_now:
                    status = "interrupted"
                    self.log.say(f"interrupted at step {step}; continue with: {resume_hint}")
                    break

                # -- update `step`
                t0 = time.perf_counter()
                out = update(step)
                interval.add(out, time.perf_counter() - t0)
                if step % log_every == 0 or step == steps - 1:
                    record = interval.record(self.dist, self.device)  # the one host sync of the interval
                    if finish_record is not None:
                        record = finish_record(record)
                    record = {"kind": "train", "step": step, **record, **out.info}
                    if self.device.type == "cuda":
                        record["max_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                    self.log.write(record)
                    if "loss" in record:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                    interval = _Interval()
                bar.update(1)
                self.step = step + 1
                if on_step is not None:
                    on_step(self.step)
        return status, last_eval

    def save_checkpoint(self, extras: dict, keep: int) -> None:
        """Every rank's random streams are gathered; rank 0 writes the checkpoint of the current step."""
        rng = dist.gather_objects(rng_state(self.generators), self.dist)
        if self.is_main:
            ckpts.save_checkpoint(self.out_dir, self.step, {
                "world": self.dist.world, **extras, **{n: obj.state_dict() for n, obj in self.stateful.items()},
                "rng": rng}, keep=keep)

    def export(self, model: torch.nn.Module, save: Callable[[torch.nn.Module], Path],
               final: dict | None = None) -> tuple[Path | None, list[str]]:
        """A finished run's weights: every rank's hash of ``model`` (they must agree under DDP), then rank 0
        ``save``s it and logs the final record. Returns ``(weights folder or None on other ranks, hashes)``."""
        from pvvae_cli.codec.latents import weights_hash

        hashes = dist.gather_objects(weights_hash(model), self.dist)
        weights_dir = None
        if self.is_main:
            weights_dir = save(model)
            self.log.write({"kind": "final", "step": self.step, "weights": str(weights_dir),
                            "rank_weight_hashes": hashes, **(final or {})})
            self.log.say(f"exported {weights_dir}")
        return weights_dir, hashes

    def finish(self) -> None:
        """The end of a run that went well, on every rank (a group made by the caller is left to the caller)."""
        if self._owns_group:
            dist.finish(self.dist)
        else:
            dist.barrier(self.dist)


class _Interval:
    """The updates between two log lines: loss terms summed on the device, update time and samples on the host."""

    def __init__(self) -> None:
        self.n, self.seconds, self.samples = 0, 0.0, 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, out: Update, seconds: float) -> None:
        self.n += 1
        self.seconds += seconds
        self.samples += out.samples
        for name, value in out.terms.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def record(self, info: dist.DistInfo, device: torch.device) -> dict[str, float]:
        """The interval's mean of every term, averaged over the ranks, plus throughput (update time only: data
        wait included, evaluation and checkpoints excluded)."""
        names = sorted(self.sums)  # the same on every rank: the same steps log the same terms
        values = {}
        if names:
            stacked = dist.mean_over_ranks(torch.stack([self.sums[k].to(device) for k in names]).double() / self.n,
                                           info)
            values = dict(zip(names, stacked.cpu().tolist(), strict=True))  # the interval's one host sync
        return {**values, "sec_per_step": self.seconds / self.n,
                "samples_per_s": self.samples * info.world / max(self.seconds, 1e-12)}
