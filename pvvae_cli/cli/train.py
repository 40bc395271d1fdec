"""``pvvae train`` (stages 1 and 2) and ``pvvae finetune-decoder`` (stage 3): parse, build the config, train.

Every option defaults to "not given" (``None``) so that precedence is exact: stage defaults < ``--config``
file < flags. The defaults themselves live in ``TrainConfig``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import fail
from pvvae_cli.models.pvvae.config import PRESETS


class Stage(StrEnum):
    image = "image"
    video = "video"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"


class PaddingMode(StrEnum):
    learnable = "learnable"
    gaussian = "gaussian"


PresetName = StrEnum("PresetName", {name: name for name in PRESETS})

_DATA_HELP = ("Training data: a folder of videos/images (searched recursively; repeatable), or synthetic:KIND "
              "with KIND shapes, digits, textures or mix (generated on the fly, no files).")

# Shared option types (the two commands take the same options, bar the objective's).
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML or JSON file of options (keys = option "
                                                "names); flags override it.", dir_okay=False)]
PresetOpt = Annotated[PresetName | None, typer.Option(help="Start from random weights of this preset.")]
InitOpt = Annotated[str | None, typer.Option(help="Start from these weights: a weights folder, a hub repo id, or "
                                                  "a finished run folder (its weights/).")]
DataOpt = Annotated[list[str] | None, typer.Option("--data", help=_DATA_HELP, metavar="DIR|synthetic:KIND")]
ValDataOpt = Annotated[list[str] | None, typer.Option(
    "--val-data", metavar="DIR|synthetic:KIND",
    help="Validation data (same forms as --data). Default: the training source drawn with another seed.")]
FramesOpt = Annotated[int | None, typer.Option(help="Frames per clip, 1 + 4k. Default: 17; 1 for --stage image.")]
StrideOpt = Annotated[int | None, typer.Option(help="Take every N-th frame of a video. Default: 1.")]
SizeOpt = Annotated[int | None, typer.Option(help="Training crop size (square, multiple of 16). Default: 256.")]
BatchOpt = Annotated[int | None, typer.Option(help="Clips per micro-batch per process. Default: 4.")]
AccumOpt = Annotated[int | None, typer.Option(help="Micro-batches per optimiser step. Default: 1.")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimiser steps. Default: 10000.")]
LrOpt = Annotated[float | None, typer.Option(help="Peak learning rate (AdamW). Default: 5e-5.")]
WarmupOpt = Annotated[int | None, typer.Option(help="Warm-up steps (at most steps/10). Default: 1000.")]
WdOpt = Annotated[float | None, typer.Option(help="AdamW weight decay (not on norms, biases, padding token). "
                                                  "Default: 0.01.")]
ClipOpt = Annotated[float | None, typer.Option(help="Gradient-norm clipping, 0 = off. Default: 1.0.")]
EmaOpt = Annotated[float | None, typer.Option(help="EMA decay of the weights, 0 = off; exported weights are the "
                                                   "EMA ones when on. Default: 0.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run folder (config, metrics.jsonl, samples, "
                                             "checkpoints, exported weights/).", file_okay=False)]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="Continue the run in this folder from its latest "
                                                "checkpoint (may change --steps and logging options only).",
                                                file_okay=False)]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of everything random. Default: 0.")]
MseOpt = Annotated[float | None, typer.Option(help="Weight of the MSE loss. Default: 1.0.")]
MotionOpt = Annotated[float | None, typer.Option(help="Weight of the motion-aware (frame difference) loss. "
                                                      "Default: 1.0.")]
LpipsOpt = Annotated[float | None, typer.Option(help="Weight of LPIPS (AlexNet; needs its ImageNet weights). "
                                                     "Default: 0.")]
GanOpt = Annotated[float | None, typer.Option(help="Weight of the adversarial loss (3D patch discriminator, "
                                                   "hinge), times the adaptive balance. Default: 0.2.")]
GanAdaptiveOpt = Annotated[bool | None, typer.Option(
    "--gan-adaptive/--no-gan-adaptive", show_default=False,
    help="Scale the adversarial loss so its gradient at the decoder's last layer is --gan-weight times the "
         "reconstruction gradient (as in VQGAN). Default: on.")]
GanStartOpt = Annotated[int | None, typer.Option(help="First step with the adversarial loss. Default: 5000; 0 for "
                                                      "finetune-decoder.")]
KlOpt = Annotated[float | None, typer.Option(help="Weight of the KL term (per pixel value). Default: 1e-6.")]
DiscLrOpt = Annotated[float | None, typer.Option(help="Discriminator learning rate. Default: --lr.")]
DiscChOpt = Annotated[int | None, typer.Option(help="Discriminator base width (x2 per stage, 4 stages). "
                                                    "Default: 64.")]
PrecisionOpt = Annotated[Precision | None, typer.Option(help="fp32, or bf16 autocast. Default: fp32.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (under torchrun: cuda = one GPU "
                                                    "per process). Default: auto.")]
WorkersOpt = Annotated[int | None, typer.Option(help="DataLoader worker processes per process. Default: 2.")]
LogEveryOpt = Annotated[int | None, typer.Option(help="Write a metrics.jsonl line every N steps. Default: 10.")]
ValEveryOpt = Annotated[int | None, typer.Option(help="Validate and write a sample video every N steps. "
                                                      "Default: 500.")]
ValClipsOpt = Annotated[int | None, typer.Option(help="Validation clips. Default: 8.")]
CkptEveryOpt = Annotated[int | None, typer.Option(help="Write a checkpoint every N steps. Default: 500.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress messages.")]


def train(
    stage: Annotated[Stage, typer.Option(help="image: 1-frame clips; video: predictive training.")] = Stage.video,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    init: InitOpt = None,
    data: DataOpt = None,
    val_data: ValDataOpt = None,
    frames: FramesOpt = None,
    frame_stride: StrideOpt = None,
    size: SizeOpt = None,
    batch_size: BatchOpt = None,
    grad_accum: AccumOpt = None,
    steps: StepsOpt = None,
    lr: LrOpt = None,
    warmup_steps: WarmupOpt = None,
    weight_decay: WdOpt = None,
    grad_clip: ClipOpt = None,
    ema_decay: EmaOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    seed: SeedOpt = None,
    max_drop_ratio: Annotated[float | None, typer.Option(help="r: drop k ~ U{0..floor((G-1) r)} trailing 4-frame "
                                                              "groups. Default: 1.0.")] = None,
    predictive: Annotated[bool | None, typer.Option("--predictive/--no-predictive", help="--no-predictive: plain "
                                                    "reconstruction baseline (r = 0). Default: predictive.",
                                                    show_default=False)] = None,
    padding: Annotated[PaddingMode | None, typer.Option(help="Latents for dropped groups: learnable tokens "
                                                             "(saved with the weights) or gaussian N(0, I). "
                                                             "Default: learnable.")] = None,
    mse_weight: MseOpt = None,
    motion_weight: MotionOpt = None,
    lpips_weight: LpipsOpt = None,
    gan_weight: GanOpt = None,
    gan_adaptive: GanAdaptiveOpt = None,
    gan_start_step: GanStartOpt = None,
    kl_weight: KlOpt = None,
    disc_lr: DiscLrOpt = None,
    disc_channels: DiscChOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    log_every: LogEveryOpt = None,
    val_every: ValEveryOpt = None,
    val_clips: ValClipsOpt = None,
    ckpt_every: CkptEveryOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a PV-VAE: --stage image (1-frame clips) or --stage video (predictive reconstruction).

    Writes --out RUN_DIR: train_config.json, metrics.jsonl, samples/, checkpoints/ and the exported weights/
    (use them with --init for the next stage). Ctrl-C or SIGTERM stops after the current step with a checkpoint;
    --resume RUN_DIR continues exactly. Under `torchrun --nproc_per_node N -m pvvae_cli train ...` it trains with
    DistributedDataParallel.
    """
    flags = dict(
        preset=preset.value if preset else None, init=init, data=data, val_data=val_data, frames=frames,
        frame_stride=frame_stride, size=size, batch_size=batch_size, grad_accum=grad_accum, steps=steps, lr=lr,
        warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed,
        max_drop_ratio=max_drop_ratio, predictive=predictive, padding=padding.value if padding else None,
        mse_weight=mse_weight, motion_weight=motion_weight, lpips_weight=lpips_weight, gan_weight=gan_weight,
        gan_adaptive=gan_adaptive, gan_start_step=gan_start_step, kl_weight=kl_weight, disc_lr=disc_lr,
        disc_channels=disc_channels,
        precision=precision.value if precision else None, device=device, workers=workers, log_every=log_every,
        val_every=val_every, val_clips=val_clips, ckpt_every=ckpt_every,
    )
    _run(stage.value, config, out, resume, quiet, flags)


def finetune_decoder(
    init: InitOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    val_data: ValDataOpt = None,
    frames: FramesOpt = None,
    frame_stride: StrideOpt = None,
    size: SizeOpt = None,
    batch_size: BatchOpt = None,
    grad_accum: AccumOpt = None,
    steps: StepsOpt = None,
    lr: LrOpt = None,
    warmup_steps: WarmupOpt = None,
    weight_decay: WdOpt = None,
    grad_clip: ClipOpt = None,
    ema_decay: EmaOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    seed: SeedOpt = None,
    mse_weight: MseOpt = None,
    motion_weight: MotionOpt = None,
    lpips_weight: LpipsOpt = None,
    gan_weight: GanOpt = None,
    gan_adaptive: GanAdaptiveOpt = None,
    gan_start_step: GanStartOpt = None,
    kl_weight: KlOpt = None,
    disc_lr: DiscLrOpt = None,
    disc_channels: DiscChOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    log_every: LogEveryOpt = None,
    val_every: ValEveryOpt = None,
    val_clips: ValClipsOpt = None,
    ckpt_every: CkptEveryOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Stage 3: fine-tune the decoder of --init weights with the encoder and padding frozen.

    Dropping is off (plain reconstruction, closing the gap between predictive training and inference) and the
    adversarial loss is on from the first step. The encoder's weights come out bit-identical.
    """
    flags = dict(
        init=init, data=data, val_data=val_data, frames=frames, frame_stride=frame_stride, size=size,
        batch_size=batch_size, grad_accum=grad_accum, steps=steps, lr=lr, warmup_steps=warmup_steps,
        weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed, mse_weight=mse_weight,
        motion_weight=motion_weight, lpips_weight=lpips_weight, gan_weight=gan_weight, gan_adaptive=gan_adaptive,
        gan_start_step=gan_start_step, kl_weight=kl_weight, disc_lr=disc_lr, disc_channels=disc_channels,
        precision=precision.value if precision else None, device=device, workers=workers, log_every=log_every,
        val_every=val_every, val_clips=val_clips, ckpt_every=ckpt_every,
    )
    _run("decoder", config, out, resume, quiet, flags)


def _absolute(spec: str) -> str:
    """Folders and local weights become absolute paths (the run stays valid from any working directory)."""
    from pvvae_cli.train.data import is_synthetic

    path = Path(spec).expanduser()
    return spec if is_synthetic(spec) or not path.exists() else str(path.resolve())


def _run(stage: str, config_file: Path | None, out: Path | None, resume: Path | None, quiet: bool,
         flags: dict) -> None:
    from pvvae_cli.metrics.perceptual import MetricUnavailable
    from pvvae_cli.models.weights import WeightsError
    from pvvae_cli.train.config import ConfigError, TrainConfig, build_config
    from pvvae_cli.train.data import DataError
    from pvvae_cli.train.trainer import CONFIG_FILE, RESUMABLE_OVERRIDES, TrainError
    from pvvae_cli.train.trainer import train as run_training

    for key in ("data", "val_data"):
        if flags.get(key):
            flags[key] = [_absolute(s) for s in flags[key]]
    if flags.get("init"):
        flags["init"] = _absolute(flags["init"])
    try:
        if resume is not None:
            given = sorted(k for k, v in flags.items() if v is not None and k not in RESUMABLE_OVERRIDES)
            if config_file is not None or given or (out is not None and out.resolve() != resume.resolve()):
                extra = ["--config"] * (config_file is not None) + [f"--{k.replace('_', '-')}" for k in given]
                extra += ["--out"] * (out is not None and out.resolve() != resume.resolve())
                fail(f"--resume {resume} continues the saved configuration; drop {', '.join(extra)} (only "
                     f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change)")
            saved_path = resume / CONFIG_FILE
            if not saved_path.is_file():
                fail(f"{saved_path}: missing; --resume needs a run folder written by pvvae train")
            saved = json.loads(saved_path.read_text())
            # `train --resume` continues image and video runs, `finetune-decoder --resume` decoder runs.
            if (saved.get("stage") == "decoder") != (stage == "decoder"):
                cmd = "finetune-decoder" if saved.get("stage") == "decoder" else "train"
                fail(f"{resume} is a {saved.get('stage')}-stage run; resume it with `pvvae {cmd} --resume {resume}`")
            cfg = TrainConfig.from_dict({**saved, **{k: v for k, v in flags.items() if v is not None}},
                                        source=str(saved_path))
            out = resume
        else:
            if out is None:
                fail("give --out RUN_DIR (a new run folder), or --resume RUN_DIR")
            cfg = build_config(stage, config_file, **flags)
        result = run_training(cfg, out, resume=resume is not None, quiet=quiet)
    except (ConfigError, DataError, TrainError, WeightsError, MetricUnavailable) as e:
        fail(str(e))
    if result.status == "interrupted":
        typer.secho(f"interrupted at step {result.step}; continue with --resume {result.out_dir}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130)
    val = result.last_val
    summary = f"finished {result.step} steps; weights: {result.weights_dir}"
    if val:
        summary += f"; val PSNR recon {val['psnr_recon']:.2f} dB"
        if "psnr_pred" in val:
            summary += f", predicted frames {val['psnr_pred']:.2f} dB (copy-last {val['psnr_copy_last']:.2f} dB)"
    if result.weights_dir is not None:
        typer.echo(summary)
