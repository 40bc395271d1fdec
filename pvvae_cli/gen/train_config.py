"""``GenTrainConfig``: everything that defines a ``gen train`` run (data, model preset, flow, optimisation, logging).

Saved beside the run as ``train_config.json`` (the run machinery's file name), never in the weights' config.
A resumed run takes its saved config; only ``RESUMABLE_OVERRIDES`` may change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvvae_cli.config_io import ConfigError, strict_from_dict
from pvvae_cli.gen.config import PRESETS

PRECISIONS = ("auto", "fp32", "bf16")  # auto: runtime.device.resolve_training_dtype (bf16 on CUDA)
# change nothing computed beyond float rounding (steps extends the run)
RESUMABLE_OVERRIDES = ("steps", "device", "log_every", "ckpt_every", "eval_every", "grad_checkpoint", "compile",
                       "strict_fp32")


@dataclass(frozen=True)
class GenTrainConfig:
    """Defaults follow Latte / DiT where they apply (AdamW lr 1e-4 constant, no weight decay, label dropout 0.1)
    and SD3 for the flow (logit-normal t, m = 0, s = 1, no shift)."""

    data: str = ""  # a folder of latent files, a pvvae encode --manifest (.jsonl) or a list of paths
    labels: str | None = None  # CSV path,label
    class_from_folders: bool = False
    preset: str = "S"
    patch_size: int = 1
    # optimisation
    batch_size: int = 8  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    steps: int = 10000
    lr: float = 1e-4
    warmup_steps: int = 0  # linear warm-up over min(warmup_steps, steps // 10) steps ...
    min_lr_ratio: float = 1.0  # ... then cosine to lr * min_lr_ratio (1.0: constant, Latte's schedule)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.0  # 0 = off; DiT/Latte use 0.9999 for long runs (exported weights are the EMA ones)
    precision: str = "auto"  # auto (bf16 autocast on CUDA; on the CPU the faster, as measured) | fp32 | bf16
    device: str = "auto"
    seed: int = 0
    grad_checkpoint: bool = False  # recompute each transformer block in backward instead of keeping activations
    compile: bool = False  # torch.compile the DiT
    strict_fp32: bool = False  # CUDA: no TF32 in fp32 matmuls and convolutions
    # flow
    label_dropout: float = 0.1  # labels replaced by the null class, for classifier-free guidance
    t_mean: float = 0.0  # logit-normal t: sigmoid(N(t_mean, t_std))
    t_std: float = 1.0
    time_shift: float = 1.0  # s t / (1 + (s-1) t); 1 = none
    # logging, evaluation, checkpoints
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = off; else run the evaluation hook (FVD/KVD, latent statistics) every N steps

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{key.replace('_', '-')} {why}, got {getattr(self, key)!r}")

        if not self.data:
            raise ConfigError("no training data: pass LATENTS_DIR (a folder of latent files from pvvae encode)")
        if self.preset not in PRESETS:
            raise bad("preset", f"must be one of {', '.join(PRESETS)}")
        for key in ("patch_size", "batch_size", "grad_accum", "steps", "log_every", "ckpt_every", "keep_checkpoints"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise bad(key, "must be a positive integer")
        for key in ("warmup_steps", "seed", "eval_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise bad(key, "must be a non-negative integer")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise bad("ema_decay", "must be in [0, 1)")
        if not 0.0 <= self.label_dropout < 1.0:
            raise bad("label_dropout", "must be in [0, 1)")
        if not self.t_std > 0 or not self.time_shift > 0:
            raise ConfigError(f"t-std and time-shift must be > 0, got {self.t_std!r}, {self.time_shift!r}")
        for key in ("weight_decay", "grad_clip"):
            if not getattr(self, key) >= 0:
                raise bad(key, "must be >= 0")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.labels is not None and self.class_from_folders:
            raise ConfigError("give --labels FILE.csv or --class-from-folders, not both")

    @property
    def warmup(self) -> int:
        return min(self.warmup_steps, self.steps // 10)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GenTrainConfig:
        d = {str(k).replace("-", "_"): v for k, v in d.items()}
        return strict_from_dict(cls, d, source, ConfigError)

    def replace(self, **changes: Any) -> GenTrainConfig:
        return dataclasses.replace(self, **changes)


def resume_gen_config(run_dir: str | Path, **flags: Any) -> GenTrainConfig:
    """The saved config of the ``gen train`` run in ``run_dir`` with ``flags`` (``RESUMABLE_OVERRIDES`` only;
    ``None`` = not given) applied."""
    from pvvae_cli.engine.checkpoints import CONFIG_FILE, read_run_config

    given = sorted(k for k, v in flags.items() if v is not None and k not in RESUMABLE_OVERRIDES)
    if given:
        raise ConfigError(f"--resume {run_dir} continues the saved configuration; drop "
                          f"{', '.join('--' + k.replace('_', '-') for k in given)} (only "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change)")
    saved = read_run_config(Path(run_dir))
    return GenTrainConfig.from_dict({**saved, **{k: v for k, v in flags.items() if v is not None}},
                                    source=str(Path(run_dir) / CONFIG_FILE))
