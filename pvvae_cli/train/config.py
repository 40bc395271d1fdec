"""``TrainConfig``: everything that defines a training run (data, objective, optimisation, logging).

Separate from the model's ``VAEConfig``: it is saved beside the run as ``train_config.json``, never in a
weights folder. Values come from, in increasing priority: the stage's defaults, a ``--config`` file (TOML or
JSON, keys are the field names below, ``-`` or ``_``), and command-line flags. A resumed run takes its saved
config; flags may change only ``RESUMABLE_OVERRIDES`` (``resume_config``).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvvae_cli.config_io import ConfigError, strict_from_dict
from pvvae_cli.frames import frame_rule_message, is_valid_frame_count
from pvvae_cli.models import registry
from pvvae_cli.models.pvvae.config import PADDING_MODES

STAGES = ("image", "video", "decoder")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: runtime.device.resolve_training_dtype (measured on the CPU)
# The perceptual term: none; ST-LPIPS (alex) (offline after `pvvae setup-metrics`); LPIPS (needs torchvision's
# ImageNet AlexNet, which no package archive ships).
PERCEPTUAL = ("none", "stlpips", "lpips")
# Settings a resumed run may change (they do not alter what is computed, except `steps`, which extends the run).
RESUMABLE_OVERRIDES = ("steps", "workers", "device", "log_every", "val_every", "val_clips", "ckpt_every",
                       "keep_checkpoints", "grad_checkpoint", "compile", "strict_fp32")


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults are documented in the README's Training section; paper values where it gives
    them (lr 5e-5, cosine decay to lr/10, max drop ratio 1.0, GAN from step 5000), VidTok's otherwise (KL 1e-6)."""

    # what to train
    stage: str = "video"  # image (1-frame clips) | video (predictive) | decoder (decoder fine-tuning)
    preset: str | None = None  # start from random weights of this preset ...
    init: str | None = None  # ... or from a weights folder / hub repo id
    # data
    data: tuple[str, ...] = ()  # folders (repeatable) or one synthetic:KIND
    val_data: tuple[str, ...] = ()  # validation clips; default: a separate seed of the training source
    frames: int = 17  # 1 + tc*k frames per clip, tc the model's temporal factor (the image stage uses 1)
    frame_stride: int = 1
    size: int = 256  # square training crop, a multiple of 16
    scale_max: int = 0  # > size: multi-scale crops (short side resized to a random size in [size, scale_max])
    workers: int = 2  # DataLoader worker processes per rank
    # optimisation
    batch_size: int = 4  # per rank and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    steps: int = 10000
    lr: float | None = None  # None: default_lr(the model's preset name), resolved when the model is built
    warmup_steps: int = 1000  # linear warm-up over min(warmup_steps, steps // 10) steps, then cosine to lr/10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    ema_decay: float = 0.0  # 0 = no EMA; e.g. 0.999 (the exported weights are the EMA ones when on)
    precision: str = "auto"  # auto (the faster here: bf16 on CUDA, measured on the CPU) | fp32 | bf16 autocast
    device: str = "auto"
    seed: int = 0
    # memory and speed (none changes what is computed beyond float rounding, so a resumed run may change them)
    grad_checkpoint: bool = False  # recompute each block's activations in backward instead of keeping them
    compile: bool = False  # torch.compile the training forward (one graph per number of dropped groups)
    strict_fp32: bool = False  # CUDA: no TF32 in fp32 matmuls and convolutions (runtime.device precision policy)
    # objective
    predictive: bool = True  # False (--no-predictive) = plain reconstruction baseline, r = 0
    max_drop_ratio: float = 1.0  # r: k ~ U{0..floor((G-1) r)} dropped trailing groups
    padding: str = "learnable"  # learnable tokens | gaussian N(0, I) latents
    # > 0 (with --preset): the model gets a linear block shortcut, fitted by block PCA on this many training clips
    # before step 0, so training starts at the best linear code (VAEConfig.linear_shortcut)
    shortcut_pca: int = 0
    # > 0 (with --preset): the decoder gets a pixel refiner of this width (VAEConfig.refiner_channels)
    refiner: int = 0
    # keep the linear block shortcut (of a --shortcut-pca model) fixed: only the network learns, so the PCA code the
    # model started from stays in it (AdamW moves every weight by ~lr per step, however small its gradient)
    freeze_shortcut: bool = False
    mse_weight: float = 1.0
    motion_weight: float = 1.0
    perceptual: str = "none"  # one of PERCEPTUAL
    perceptual_weight: float = 1.0  # of the perceptual term when `perceptual` is not none (VidTok: 1.0, LPIPS)
    lpips_net: str = "alex"  # backbone when perceptual = lpips
    gan_weight: float = 0.2  # times the adaptive balance below (VidTok's 0.2)
    gan_adaptive: bool = True  # scale by ||grad rec|| / ||grad gan|| at the decoder's last layer (VQGAN)
    gan_start_step: int = 5000  # first optimiser step (0-based) with the adversarial loss
    kl_weight: float = 1e-6
    disc_lr: float | None = None  # default: lr
    disc_channels: int = 64
    disc_layers: int = 3
    # logging, validation, checkpoints
    log_every: int = 10
    val_every: int = 500
    val_clips: int = 8
    ckpt_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for key in ("data", "val_data"):
            value = getattr(self, key)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, key, tuple(str(v) for v in value))
        self._validate()

    def _validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{key.replace('_', '-')} {why}, got {getattr(self, key)!r}")

        if self.stage not in STAGES:
            raise bad("stage", f"must be one of {', '.join(STAGES)}")
        if self.stage == "decoder" and self.init is None and self.preset is None:
            raise ConfigError("finetune-decoder needs --init WEIGHTS (e.g. the weights/ of a video-stage run)")
        if self.preset is None and self.init is None:
            raise ConfigError("give --preset NAME (random initial weights) or --init WEIGHTS (earlier weights)")
        if self.preset is not None and self.init is not None:
            raise ConfigError(f"give --preset or --init, not both (got preset {self.preset!r}, init {self.init!r})")
        if self.shortcut_pca < 0:
            raise ConfigError(f"shortcut-pca must be >= 0 clips, got {self.shortcut_pca}")
        if self.shortcut_pca and self.preset is None:
            raise ConfigError("--shortcut-pca builds a new model: use it with --preset (weights given with --init keep "
                              "the shortcut they were trained with)")
        if self.refiner < 0:
            raise ConfigError(f"refiner must be >= 0 channels, got {self.refiner}")
        if self.refiner and self.preset is None:
            raise ConfigError("--refiner builds a new model: use it with --preset (weights given with --init keep "
                              "their architecture)")
        presets = registry.presets()  # every family's
        if self.preset is not None and self.preset not in presets:
            raise bad("preset", f"must be one of {', '.join(presets)}")
        if not self.data:
            raise ConfigError("no training data: pass --data DIR (repeatable) or --data synthetic:KIND")
        if not isinstance(self.frames, int):
            raise bad("frames", "must be an integer")
        # 1 + tc*k with the model's temporal factor tc: a preset's is known here, --init weights' once they are
        # loaded (the trainer checks then, before anything is written).
        if self.preset is not None:
            self.check_frames(presets[self.preset].temporal_compression)
        elif self.frames < 1:
            raise bad("frames", "must be >= 1")
        if self.stage == "image" and self.frames != 1:
            raise bad("frames", "must be 1 for --stage image (it trains on single frames)")
        if self.stage == "decoder" and self.max_drop_ratio > 0:
            raise bad("max_drop_ratio", "must be 0 for finetune-decoder (dropping is off in that stage)")
        if self.size < 16 or self.size % 16:
            raise bad("size", "must be a positive multiple of 16")
        if not isinstance(self.scale_max, int) or (self.scale_max and self.scale_max < self.size):
            raise bad("scale_max", f"must be 0 (off) or >= size ({self.size})")
        for key in ("frame_stride", "batch_size", "grad_accum", "steps", "log_every", "val_every", "val_clips",
                    "ckpt_every", "keep_checkpoints", "disc_channels", "disc_layers"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise bad(key, "must be a positive integer")
        for key in ("workers", "warmup_steps", "gan_start_step", "seed"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise bad(key, "must be a non-negative integer")
        if self.lr is not None and not self.lr > 0:
            raise bad("lr", "must be > 0")
        if self.disc_lr is not None and not self.disc_lr > 0:
            raise bad("disc_lr", "must be > 0")
        if not 0.0 <= self.max_drop_ratio <= 1.0:
            raise bad("max_drop_ratio", "must be in [0, 1]")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise bad("ema_decay", "must be in [0, 1)")
        for key in ("mse_weight", "motion_weight", "perceptual_weight", "gan_weight", "kl_weight", "weight_decay",
                    "grad_clip"):
            if not getattr(self, key) >= 0:
                raise bad(key, "must be >= 0")
        if self.perceptual not in PERCEPTUAL:
            raise bad("perceptual", f"must be one of {', '.join(PERCEPTUAL)}")
        if self.mse_weight == 0 and self.motion_weight == 0 and self.loss_weights["perceptual"] == 0:
            raise ConfigError("mse-weight, motion-weight and the perceptual term (--perceptual, --perceptual-weight) "
                              "are all 0: nothing to reconstruct")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.padding not in PADDING_MODES:
            raise bad("padding", f"must be one of {', '.join(PADDING_MODES)}")

    def check_frames(self, temporal_compression: int) -> None:
        """``frames`` must be ``1 + tc*k`` for the model's temporal factor ``tc``; raises ``ConfigError``."""
        if not is_valid_frame_count(self.frames, temporal_compression):
            raise ConfigError(frame_rule_message(self.frames, temporal_compression, "frames"))

    # ------------------------------------------------------------------ derived values
    @property
    def drop_ratio(self) -> float:
        """The r actually used: 0 unless this is the predictive video stage."""
        return self.max_drop_ratio if (self.stage == "video" and self.predictive) else 0.0

    @property
    def warmup(self) -> int:
        return min(self.warmup_steps, self.steps // 10)

    @property
    def loss_weights(self) -> dict[str, float]:
        perceptual = self.perceptual_weight if self.perceptual != "none" else 0.0
        return {"mse": self.mse_weight, "motion": self.motion_weight, "perceptual": perceptual, "kl": self.kl_weight}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"], d["val_data"] = list(self.data), list(self.val_data)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        d = upgrade_legacy_keys({str(k).replace("-", "_"): v for k, v in d.items()})
        return strict_from_dict(cls, d, source, ConfigError)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def upgrade_legacy_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Keys of configs saved by pvvae < 0.3 in today's terms: ``lpips_weight: w`` was LPIPS with weight ``w``
    (``perceptual = "lpips"``, ``perceptual_weight = w``; 0 = no perceptual term)."""
    d = dict(d)
    if "lpips_weight" in d:
        weight = d.pop("lpips_weight")
        if weight and "perceptual" not in d:
            d |= {"perceptual": "lpips", "perceptual_weight": weight}
    return d


# Defaults that differ by stage (applied below a config file and flags).
# Peak learning rate per preset when --lr is not given: the paper's 5e-5 is for its 661 M-parameter model; small
# models learn many times faster at larger rates. Measured by overfitting fixed clips (benchmarks/bench_learning.py;
# README "Does it learn?"): tiny, 4 images 64x64, 300 Adam steps: 30.4 dB at 1e-3, 26.3 dB at 3e-4.
DEFAULT_LR: dict[str, float] = {"tiny": 1e-3, "small": 3e-4, "small-t4s8": 3e-4, "base": 5e-5,
                                "ivvae-tiny": 3e-4, "ivvae-small": 3e-4, "ivvae-z16": 5e-5}
FALLBACK_LR = 5e-5  # the paper's, for models of another name (e.g. weights trained elsewhere)


def default_lr(model_name: str) -> float:
    """The peak learning rate used when none is given, for a model of this preset name."""
    return DEFAULT_LR.get(model_name, FALLBACK_LR)


STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"frames": 1},
    "video": {},
    # Stage 3: encoder and padding frozen, dropping off, plain reconstruction, GAN on from the start.
    "decoder": {"max_drop_ratio": 0.0, "predictive": False, "gan_start_step": 0},
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The key/value table of a TOML (``.toml``) or JSON file; raises ``ConfigError`` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys and values")
    return data


def build_config(stage: str, config_file: str | Path | None = None, **flags: Any) -> TrainConfig:
    """Stage defaults <- config file <- flags (``None`` flags are "not given"). Raises ``ConfigError``."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    values: dict[str, Any] = dict(STAGE_DEFAULTS[stage])
    source = "flags"
    if config_file is not None:
        file_values = {str(k).replace("-", "_"): v for k, v in read_config_file(config_file).items()}
        if file_values.get("stage", stage) != stage:
            raise ConfigError(f"{config_file}: stage = {file_values['stage']!r} but this command trains "
                              f"stage {stage!r}; remove the key or use the matching command")
        values.update(file_values)
        source = str(config_file)
    values.update({k: v for k, v in flags.items() if v is not None})
    values["stage"] = stage
    return TrainConfig.from_dict(values, source=source)


def resume_config(run_dir: str | Path, stage: str, config_file: str | Path | None = None,
                  out: str | Path | None = None, **flags: Any) -> TrainConfig:
    """The saved config of the run in ``run_dir`` with ``flags`` applied (``None`` flags are "not given").

    A resumed run computes what it did: only ``RESUMABLE_OVERRIDES`` may be given, no config file, and no other
    run folder (``out``). ``stage`` is the command's: ``decoder`` (``finetune-decoder``) resumes decoder-stage
    runs, ``image``/``video`` (``train``) the others. Raises ``ConfigError``, or ``TrainError`` for a folder
    without a run."""
    from pvvae_cli.engine.checkpoints import CONFIG_FILE, read_run_config  # torch: imported only when resuming

    run_dir = Path(run_dir)
    given = sorted(k for k, v in flags.items() if v is not None and k not in RESUMABLE_OVERRIDES)
    other_out = out is not None and Path(out).resolve() != run_dir.resolve()
    if config_file is not None or given or other_out:
        extra = ["--config"] * (config_file is not None) + [f"--{k.replace('_', '-')}" for k in given]
        extra += ["--out"] * other_out
        # Name only the overrides this command has as flags (keep_checkpoints, for one, is a config-file key).
        may = [k for k in RESUMABLE_OVERRIDES if k in flags]
        raise ConfigError(f"--resume {run_dir} continues the saved configuration; drop {', '.join(extra)} (only "
                          f"{', '.join('--' + k.replace('_', '-') for k in may)} may change)")
    saved = read_run_config(run_dir)
    if (saved.get("stage") == "decoder") != (stage == "decoder"):
        cmd = "finetune-decoder" if saved.get("stage") == "decoder" else "train"
        raise ConfigError(f"{run_dir} is a {saved.get('stage')}-stage run; resume it with "
                          f"`pvvae {cmd} --resume {run_dir}`")
    return TrainConfig.from_dict({**saved, **{k: v for k, v in flags.items() if v is not None}},
                                 source=str(run_dir / CONFIG_FILE))


def absolute_sources(flags: dict[str, Any]) -> dict[str, Any]:
    """``data``, ``val_data`` and ``init`` with existing local paths made absolute, so the saved config stays valid
    from any working directory (``synthetic:KIND`` and hub repo ids are kept as given)."""
    from pvvae_cli.train.data import is_synthetic

    def absolute(spec: str) -> str:
        path = Path(spec).expanduser()
        return spec if is_synthetic(spec) or not path.exists() else str(path.resolve())

    flags = dict(flags)
    for key in ("data", "val_data"):
        if flags.get(key):
            flags[key] = [absolute(s) for s in flags[key]]
    if flags.get("init"):
        flags["init"] = absolute(flags["init"])
    return flags
