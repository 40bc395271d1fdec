"""``pvvae train`` (stages 1 and 2) and ``pvvae finetune-decoder`` (stage 3): parse, build the config, train.

Every option defaults to "not given" (``None``) so that precedence is exact: stage defaults < ``--config``
file < flags; a resumed run takes its saved config (``train.config.resume_config``). The defaults themselves
live in ``TrainConfig``: the help texts below read them from its fields.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pvvae_cli.cli.common import fail
from pvvae_cli.models import registry
from pvvae_cli.models.pvvae.config import PADDING_MODES
from pvvae_cli.train.config import (
    DEFAULT_LR,
    FALLBACK_LR,
    PERCEPTUAL,
    PRECISIONS,
    STAGE_DEFAULTS,
    STAGES,
    TrainConfig,
)

# `train` runs the image and video stages; the decoder stage is `finetune-decoder`.
Stage = StrEnum("Stage", {s: s for s in STAGES if s != "decoder"})
Precision = StrEnum("Precision", {p: p for p in PRECISIONS})
PaddingMode = StrEnum("PaddingMode", {m: m for m in PADDING_MODES})
Perceptual = StrEnum("Perceptual", {p: p for p in PERCEPTUAL})
PresetName = StrEnum("PresetName", {name: name for name in registry.presets()})

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_STAGE_FLAG = {"image": "--stage image", "video": "--stage video", "decoder": "finetune-decoder"}
_TRAIN = tuple(Stage)  # the stages of options that only `train` has
_TC = "/".join(str(t) for t in sorted({c.temporal_compression for c in registry.presets().values()}))  # "4" today


def _help(text: str, key: str, stages: tuple[str, ...] = STAGES) -> str:
    """``text`` plus ``TrainConfig``'s default for ``key`` and, among ``stages``, those that default it otherwise."""
    def show(value) -> str:
        if isinstance(value, bool):
            return f"--{key.replace('_', '-')}" if value else f"--no-{key.replace('_', '-')}"
        return f"{value:g}" if isinstance(value, float) else str(value)

    others = [f"{show(STAGE_DEFAULTS[s][key])} for {_STAGE_FLAG[s]}" for s in stages if key in STAGE_DEFAULTS[s]]
    return f"{text} Default: {'; '.join([show(_DEFAULTS[key]), *others])}."


_DATA_HELP = ("Training data: a folder of videos/images (searched recursively; repeatable), or synthetic:KIND "
              "with KIND shapes, digits, textures or mix (generated on the fly, no files).")

# Shared option types (the two commands take the same options, bar the objective's).
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML or JSON file of options (keys = option "
                                                "names); flags override it.", dir_okay=False)]
PresetOpt = Annotated[PresetName | None, typer.Option(help="Start from random weights of this preset.")]
InitOpt = Annotated[str | None, typer.Option(help="Start from these weights: a weights folder, a hub repo id, "
                                                  "a finished run folder (its weights/), or a Wan VAE (diffusers "
                                                  "folder or Wan2.x_VAE.pth).")]
DataOpt = Annotated[list[str] | None, typer.Option("--data", help=_DATA_HELP, metavar="DIR|synthetic:KIND")]
ValDataOpt = Annotated[list[str] | None, typer.Option(
    "--val-data", metavar="DIR|synthetic:KIND",
    help="Validation data (same forms as --data). Default: the training source drawn with another seed.")]
FramesOpt = Annotated[int | None, typer.Option(help=_help(
    f"Frames per clip, 1 + tc*k with tc the model's temporal factor ({_TC} for the presets).", "frames"))]
StrideOpt = Annotated[int | None, typer.Option(help=_help("Take every N-th frame of a video.", "frame_stride"))]
SizeOpt = Annotated[int | None, typer.Option(help=_help("Training crop size (square, multiple of 16).", "size"))]
ScaleMaxOpt = Annotated[int | None, typer.Option(help=_help(
    "Multi-scale crops: resize each clip's short side to a random size in [size, N] before the random crop, so "
    "the model sees the detail of larger frames (0 = off: the whole short side scaled to size).", "scale_max"))]
BatchOpt = Annotated[int | None, typer.Option(help=_help("Clips per micro-batch per process.", "batch_size"))]
AccumOpt = Annotated[int | None, typer.Option(help=_help("Micro-batches per optimiser step.", "grad_accum"))]
StepsOpt = Annotated[int | None, typer.Option(help=_help("Optimiser steps.", "steps"))]
LrOpt = Annotated[float | None, typer.Option(help="Peak learning rate (AdamW). Default: the preset's (" + ", ".join(
    f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + f"), {FALLBACK_LR:g} for other models.")]
WarmupOpt = Annotated[int | None, typer.Option(help=_help("Warm-up steps (at most steps/10).", "warmup_steps"))]
WdOpt = Annotated[float | None, typer.Option(help=_help("AdamW weight decay (not on norms, biases, padding token).",
                                                        "weight_decay"))]
ClipOpt = Annotated[float | None, typer.Option(help=_help("Gradient-norm clipping, 0 = off.", "grad_clip"))]
EmaOpt = Annotated[float | None, typer.Option(help=_help("EMA decay of the weights, 0 = off; exported weights are "
                                                         "the EMA ones when on.", "ema_decay"))]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run folder (config, metrics.jsonl, samples, "
                                             "checkpoints, exported weights/).", file_okay=False)]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="Continue the run in this folder from its latest "
                                                "checkpoint (may change --steps and logging options only).",
                                                file_okay=False)]
SeedOpt = Annotated[int | None, typer.Option(help=_help("Seed of everything random.", "seed"))]
MseOpt = Annotated[float | None, typer.Option(help=_help("Weight of the MSE loss.", "mse_weight"))]
MotionOpt = Annotated[float | None, typer.Option(help=_help("Weight of the motion-aware (frame difference) loss.",
                                                            "motion_weight"))]
PerceptualOpt = Annotated[Perceptual | None, typer.Option(help=_help(
    "Perceptual loss, per frame: stlpips = ST-LPIPS (alex), offline after `pvvae setup-metrics`; lpips = LPIPS "
    "(needs torchvision's ImageNet AlexNet weights); none.", "perceptual"))]
PerceptualWeightOpt = Annotated[float | None, typer.Option(help=_help("Weight of the perceptual loss.",
                                                                      "perceptual_weight"))]
GanOpt = Annotated[float | None, typer.Option(help=_help("Weight of the adversarial loss (3D patch discriminator, "
                                                         "hinge), times the adaptive balance.", "gan_weight"))]
GanAdaptiveOpt = Annotated[bool | None, typer.Option(
    "--gan-adaptive/--no-gan-adaptive", show_default=False,
    help=_help("Scale the adversarial loss so its gradient at the decoder's last layer is --gan-weight times the "
               "reconstruction gradient (as in VQGAN).", "gan_adaptive"))]
GanStartOpt = Annotated[int | None, typer.Option(help=_help("First step with the adversarial loss.",
                                                            "gan_start_step"))]
KlOpt = Annotated[float | None, typer.Option(help=_help("Weight of the KL term (per pixel value).", "kl_weight"))]
DiscLrOpt = Annotated[float | None, typer.Option(help="Discriminator learning rate. Default: --lr.")]
DiscChOpt = Annotated[int | None, typer.Option(help=_help("Discriminator base width (x2 per stage, 4 stages).",
                                                          "disc_channels"))]
PrecisionOpt = Annotated[Precision | None, typer.Option(help=_help(
    "auto: bf16 autocast on CUDA; on the CPU whichever of fp32 and bf16 a short probe measures faster here "
    "(bf16 is ~1.8x faster on CPUs with AVX512-BF16/AMX, slower on others). Or fp32, or bf16.", "precision"))]
DeviceOpt = Annotated[str | None, typer.Option(help=_help("auto, cpu, cuda or cuda:N (under torchrun: cuda = one "
                                                          "GPU per process).", "device"))]
WorkersOpt = Annotated[int | None, typer.Option(help=_help("DataLoader worker processes per process.", "workers"))]
LogEveryOpt = Annotated[int | None, typer.Option(help=_help("Write a metrics.jsonl line every N steps.",
                                                            "log_every"))]
ValEveryOpt = Annotated[int | None, typer.Option(help=_help("Validate and write a sample video every N steps.",
                                                            "val_every"))]
ValClipsOpt = Annotated[int | None, typer.Option(help=_help("Validation clips.", "val_clips"))]
CkptEveryOpt = Annotated[int | None, typer.Option(help=_help("Write a checkpoint every N steps.", "ckpt_every"))]


def _switch(key: str, text: str):
    """A ``--key/--no-key`` option of ``TrainConfig`` field ``key`` (``None``: not given)."""
    flag = key.replace("_", "-")
    return Annotated[bool | None, typer.Option(f"--{flag}/--no-{flag}", show_default=False, help=_help(text, key))]


FreezeShortcutOpt = _switch("freeze_shortcut", (
    "Keep the model's linear block shortcut (--shortcut-pca) fixed: only the network learns, so the PCA code the "
    "model started from stays in it."))
GradCheckpointOpt = _switch("grad_checkpoint", (
    "Activation checkpointing: recompute each block's activations in backward instead of keeping them (base at "
    "17x256²: a fifth of the saved activations, for about one more forward pass; same losses within float "
    "rounding). See --estimate-memory."))
CompileOpt = _switch("compile", (
    "torch.compile the training forward (an encoder and a decoder graph per number of dropped groups, compiled on "
    "first use). Pays off on CUDA; minutes of compilation on a CPU."))
StrictFp32Opt = _switch("strict_fp32", (
    "On CUDA, keep fp32 matmuls and convolutions in full fp32 (default: TF32, several times faster, ~1e-3 "
    "relative rounding). Recorded in metrics.jsonl."))
EstimateOpt = Annotated[bool, typer.Option(
    "--estimate-memory", help="Print the device memory one training step of this configuration needs (parameters, "
    "gradients, AdamW state, EMA, saved activations; counted with fake tensors, nothing allocated) and exit. "
    "Plan a GPU run on any machine: e.g. --device cuda --precision bf16 --preset base --batch-size 4.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress messages.")]


def train(
    stage: Annotated[Stage, typer.Option(help="image: 1-frame clips; video: predictive training.")] = Stage(
        _DEFAULTS["stage"]),
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    init: InitOpt = None,
    data: DataOpt = None,
    val_data: ValDataOpt = None,
    frames: FramesOpt = None,
    frame_stride: StrideOpt = None,
    size: SizeOpt = None,
    scale_max: ScaleMaxOpt = None,
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
    max_drop_ratio: Annotated[float | None, typer.Option(help=_help(
        "r: drop k ~ U{0..floor((G-1) r)} trailing groups (tc frames each).", "max_drop_ratio", _TRAIN))] = None,
    predictive: Annotated[bool | None, typer.Option("--predictive/--no-predictive", help=_help(
        "--no-predictive: plain reconstruction baseline (r = 0).", "predictive", _TRAIN), show_default=False)] = None,
    padding: Annotated[PaddingMode | None, typer.Option(help=_help(
        "Latents for dropped groups: learnable tokens (saved with the weights) or gaussian N(0, I).",
        "padding"))] = None,
    shortcut_pca: Annotated[int | None, typer.Option(help=_help(
        "With --preset: add a linear block shortcut to the model, fitted by block PCA on this many training clips "
        "before step 0, so training starts at the best linear code (0 = none).", "shortcut_pca"))] = None,
    refiner: Annotated[int | None, typer.Option(help=_help(
        "With --preset: give the decoder a pixel refiner of this width (a residual post-filter on its output, "
        "group causal, starting as the identity; models/pixel_refiner.py) (0 = none).", "refiner"))] = None,
    freeze_shortcut: FreezeShortcutOpt = None,
    mse_weight: MseOpt = None,
    motion_weight: MotionOpt = None,
    perceptual: PerceptualOpt = None,
    perceptual_weight: PerceptualWeightOpt = None,
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
    grad_checkpoint: GradCheckpointOpt = None,
    compile: CompileOpt = None,
    strict_fp32: StrictFp32Opt = None,
    estimate_memory: EstimateOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a PV-VAE: --stage image (1-frame clips) or --stage video (predictive reconstruction).

    Writes --out RUN_DIR: train_config.json, metrics.jsonl, samples/, checkpoints/ and the exported weights/
    (use them with --init for the next stage). Ctrl-C or SIGTERM stops after the current step with a checkpoint;
    --resume RUN_DIR continues exactly. Under `torchrun --nproc_per_node N -m pvvae_cli train ...` it trains with
    DistributedDataParallel.
    """
    flags = _config_flags(locals())
    _run(stage.value, config, out, resume, quiet, flags, estimate_memory)


def finetune_decoder(
    init: InitOpt = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    val_data: ValDataOpt = None,
    frames: FramesOpt = None,
    frame_stride: StrideOpt = None,
    size: SizeOpt = None,
    scale_max: ScaleMaxOpt = None,
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
    freeze_shortcut: FreezeShortcutOpt = None,
    mse_weight: MseOpt = None,
    motion_weight: MotionOpt = None,
    perceptual: PerceptualOpt = None,
    perceptual_weight: PerceptualWeightOpt = None,
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
    grad_checkpoint: GradCheckpointOpt = None,
    compile: CompileOpt = None,
    strict_fp32: StrictFp32Opt = None,
    estimate_memory: EstimateOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stage 3: fine-tune the decoder of --init weights with the encoder and padding frozen.

    Dropping is off (plain reconstruction, closing the gap between predictive training and inference) and the
    adversarial loss is on from the first step. The encoder's weights come out bit-identical.
    """
    flags = _config_flags(locals())
    _run("decoder", config, out, resume, quiet, flags, estimate_memory)


def _config_flags(options: dict[str, Any]) -> dict[str, Any]:
    """The command's options that are ``TrainConfig`` fields (all but --stage, --config, --out, --resume, --quiet),
    choices as their plain values; ``None`` = not given."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in options.items() if k in _DEFAULTS and k != "stage"}


def _run(stage: str, config_file: Path | None, out: Path | None, resume: Path | None, quiet: bool,
         flags: dict, estimate_memory: bool = False) -> None:
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.metrics.perceptual import MetricUnavailable
    from pvvae_cli.models.weights import WeightsError
    from pvvae_cli.train.config import absolute_sources, build_config, resume_config
    from pvvae_cli.train.trainer import train as run_training

    if resume is None and out is None and not estimate_memory:
        fail("give --out RUN_DIR (a new run folder), or --resume RUN_DIR")
    flags = absolute_sources(flags)  # the saved config then works from any working directory
    try:
        if resume is not None:
            cfg = resume_config(resume, stage, config_file, out, **flags)
        else:
            cfg = build_config(stage, config_file, **flags)
        if estimate_memory:
            from pvvae_cli.train.build import estimate_memory as estimate

            typer.echo(estimate(cfg))
            return
        result = run_training(cfg, resume or out, resume=resume is not None, quiet=quiet)
    except (PvvaeError, WeightsError, MetricUnavailable) as e:
        fail(str(e))
    if result.status == "interrupted":
        typer.secho(f"interrupted at step {result.step}; continue with --resume {result.out_dir}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130)
    val = result.last_val
    summary = f"finished {result.step} steps; weights: {result.weights_dir}"
    if val:
        summary += f"; val PSNR recon {val['psnr_recon']:.2f} dB"
        if "pred_psnr" in val:
            summary += f", predicted frames {val['pred_psnr']:.2f} dB (copy-last {val['copy_psnr']:.2f} dB)"
    if result.weights_dir is not None:
        typer.echo(summary)
