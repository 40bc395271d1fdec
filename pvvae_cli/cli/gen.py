"""``pvvae gen``: train a latent video diffusion transformer on latent files and sample videos from it.

Thin: each command parses, builds a config, calls one library function (``gen.trainer.train_gen``,
``gen.generate.generate``) and reports. Options default to "not given" (``None``) so that a resumed run can tell
which ones were passed; the defaults live in ``GenTrainConfig``.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import fail
from pvvae_cli.gen.config import PRESETS
from pvvae_cli.gen.train_config import PRECISIONS, GenTrainConfig

gen_app = typer.Typer(name="gen", help="Latent video diffusion (Latte-style DiT, rectified flow) on pvvae latents.",
                      no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

GenPreset = StrEnum("GenPreset", {name: name for name in PRESETS})
Precision = StrEnum("Precision", {p: p for p in PRECISIONS})
_D = {f.name: f.default for f in dataclasses.fields(GenTrainConfig)}


def _opt(text: str, key: str) -> str:
    return f"{text} Default: {_D[key]}."


@gen_app.command("train")
def train(
    latents: Annotated[Path | None, typer.Argument(
        help="Folder of latent files from pvvae encode (recursive), or its --manifest (.jsonl), or a list of paths.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="New run folder.", file_okay=False)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this folder exactly.",
                                                file_okay=False)] = None,
    preset: Annotated[GenPreset | None, typer.Option(help=_opt("Model size: tiny (tests), Latte's S, B, L, XL.",
                                                               "preset"))] = None,
    patch_size: Annotated[int | None, typer.Option(help=_opt("Spatial patch size.", "patch_size"))] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV of path,label rows: class-conditional training.",
                                                dir_okay=False, exists=True)] = None,
    class_from_folders: Annotated[bool | None, typer.Option(
        "--class-from-folders", help="The class of a file is its first folder below LATENTS.")] = None,
    steps: Annotated[int | None, typer.Option(help=_opt("Optimiser steps.", "steps"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_opt("Clips per step per process.", "batch_size"))] = None,
    lr: Annotated[float | None, typer.Option(help=_opt("AdamW learning rate (constant unless --min-lr-ratio).",
                                                       "lr"))] = None,
    warmup_steps: Annotated[int | None, typer.Option(help=_opt("Linear warm-up steps.", "warmup_steps"))] = None,
    min_lr_ratio: Annotated[float | None, typer.Option(help=_opt("Cosine decay to lr * this (1 = constant).",
                                                                 "min_lr_ratio"))] = None,
    ema_decay: Annotated[float | None, typer.Option(help=_opt("EMA of the weights, 0 = off (exported weights are "
                                                              "the EMA ones when on).", "ema_decay"))] = None,
    label_dropout: Annotated[float | None, typer.Option(help=_opt(
        "Probability of the null class (for classifier-free guidance).", "label_dropout"))] = None,
    time_shift: Annotated[float | None, typer.Option(help=_opt("Timestep shift s of the training times.",
                                                               "time_shift"))] = None,
    grad_accum: Annotated[int | None, typer.Option(help=_opt("Micro-batches per optimiser step (--batch-size "
                                                             "each).", "grad_accum"))] = None,
    precision: Annotated[Precision | None, typer.Option(help=_opt(
        "auto: bf16 autocast on CUDA, on the CPU whichever of fp32 and bf16 a short probe measures faster here; or "
        "fp32, or bf16 autocast.", "precision"))] = None,
    device: Annotated[str | None, typer.Option(help=_opt("auto, cpu, cuda or cuda:N (under torchrun: cuda = one GPU "
                                                         "per process).", "device"))] = None,
    grad_checkpoint: Annotated[bool | None, typer.Option(
        "--grad-checkpoint/--no-grad-checkpoint", show_default=False, help=_opt(
            "Recompute each transformer block's activations in backward instead of keeping them (same losses within "
            "float rounding).", "grad_checkpoint"))] = None,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", show_default=False, help=_opt(
            "torch.compile the DiT (compiled on first use; pays off on CUDA).", "compile"))] = None,
    strict_fp32: Annotated[bool | None, typer.Option(
        "--strict-fp32/--no-strict-fp32", show_default=False, help=_opt(
            "On CUDA, no TF32 in fp32 matmuls and convolutions (default: TF32).", "strict_fp32"))] = None,
    seed: Annotated[int | None, typer.Option(help=_opt("Seed of everything random.", "seed"))] = None,
    log_every: Annotated[int | None, typer.Option(help=_opt("metrics.jsonl line every N steps.", "log_every"))] = None,
    ckpt_every: Annotated[int | None, typer.Option(help=_opt("Checkpoint every N steps.", "ckpt_every"))] = None,
    eval_every: Annotated[int | None, typer.Option(help=_opt(
        "Every N steps, sample --eval-samples latents (fixed seed) and log their distance to the training latents "
        "(0 = off).", "eval_every"))] = None,
    eval_reference: Annotated[list[Path] | None, typer.Option(
        "--eval-reference", help="Held-out real clips (folder or files, repeatable): each evaluation also decodes "
        "the samples with the model's VAE and logs FVD and KVD (I3D) against them.")] = None,
    i3d: Annotated[Path | None, typer.Option(help="The converted Kinetics-400 I3D (.safetensors) for "
                                                  "--eval-reference (default: $PVVAE_I3D or the metrics cache that "
                                                  "`pvvae setup-metrics` fills).")] = None,
    eval_samples: Annotated[int, typer.Option(help="Samples per evaluation.")] = 16,
    eval_steps: Annotated[int, typer.Option(help="Euler steps per evaluation sample.")] = 25,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages.")] = False,
) -> None:
    """Train a Latte-style diffusion transformer (rectified flow) on latent files written by pvvae encode.

    Writes --out RUN: train_config.json, metrics.jsonl (loss, loss per t bin), checkpoints/ and the exported
    weights/ (config.json + model.safetensors + README.md). Ctrl-C or SIGTERM stops with a checkpoint; --resume RUN
    continues exactly. Runs under torchrun (DDP) like pvvae train.
    """
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.gen.train_config import resume_gen_config
    from pvvae_cli.gen.trainer import train_gen
    from pvvae_cli.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # several times faster elementwise ops on large activations (see allocator.py)
    flags = {k: v for k, v in dict(
        preset=preset.value if preset else None, patch_size=patch_size,
        labels=str(labels.resolve()) if labels else None,
        class_from_folders=class_from_folders, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
        min_lr_ratio=min_lr_ratio, ema_decay=ema_decay, label_dropout=label_dropout, time_shift=time_shift,
        precision=precision.value if precision else None, device=device, seed=seed, log_every=log_every,
        ckpt_every=ckpt_every, eval_every=eval_every, grad_accum=grad_accum, grad_checkpoint=grad_checkpoint,
        compile=compile, strict_fp32=strict_fp32).items() if v is not None}
    try:
        if resume is not None:
            if latents is not None or out is not None:
                fail("--resume RUN continues the saved run; drop LATENTS and --out")
            cfg = resume_gen_config(resume, **flags)
        else:
            if latents is None or out is None:
                fail("give LATENTS (a folder of latent files) and --out RUN, or --resume RUN")
            cfg = GenTrainConfig(data=str(latents.resolve()), **flags)
        if eval_reference and not cfg.eval_every:
            fail("--eval-reference needs --eval-every N (how often to evaluate)")
        hook = _eval_hook(cfg, eval_samples, eval_steps, eval_reference, i3d) if cfg.eval_every else None
        result = train_gen(cfg, resume or out, resume=resume is not None, quiet=quiet, eval_hook=hook)
    except PvvaeError as e:  # MetricUnavailable (no I3D) included
        fail(str(e))
    if result.status == "interrupted":
        typer.secho(f"interrupted at step {result.step}; continue with --resume {result.out_dir}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130)
    if result.weights_dir is not None:
        typer.echo(f"finished {result.step} steps (last loss {result.last_loss:.4f}); weights: {result.weights_dir}")


def _eval_hook(cfg: GenTrainConfig, num: int, steps: int, reference: list[Path] | None, i3d: Path | None):
    """The evaluation run every --eval-every steps (``gen.video_eval.training_eval_hook``): the distance of
    fixed-seed samples to the training latents, plus FVD/KVD of the decoded samples against --eval-reference. What
    can fail (the VAE, the I3D file, the reference clips) is checked here, on every process, before training; the
    networks are loaded at the first evaluation, on the main process only, on the training device."""
    from pvvae_cli.gen.video_eval import training_eval_hook

    return training_eval_hook(cfg, num, steps, reference, i3d)


@gen_app.command("sample")
def sample(
    model: Annotated[str, typer.Argument(help="A gen run folder, its weights/ folder, or a hub repo id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.", file_okay=False)],
    num: Annotated[int, typer.Option("--num", "-n", help="Number of clips.")] = 8,
    cls: Annotated[str | None, typer.Option("--class", help="Class id or name (conditional models); default: "
                                                            "the classes in turn.")] = None,
    cfg_scale: Annotated[float, typer.Option(help="Classifier-free guidance scale w: v_u + w (v_c - v_u); 1 = "
                                                  "plain conditional.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Euler steps from t = 1 to 0.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise (same seed, same samples).")] = 0,
    vae: Annotated[str | None, typer.Option(help="Decode with this VAE (default: the one the model records).")] = None,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="Decode to mp4 + contact sheet.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto (bf16 autocast on CUDA where supported, fp32 on the "
                                                      "CPU), fp32, or bf16 autocast.")] = Precision("auto"),
    batch_size: Annotated[int, typer.Option(help="Clips sampled at once (twice that through the model with "
                                                 "guidance); the samples do not depend on it.")] = 16,
) -> None:
    """Sample latent clips from a gen model, decode them with its VAE, and write latent files, mp4s and
    contact_sheet.png (first frames) to --output."""
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.gen.generate import generate
    from pvvae_cli.gen.weights import load_gen
    from pvvae_cli.runtime.allocator import keep_freed_memory
    from pvvae_cli.runtime.device import resolve_device, resolve_dtype

    keep_freed_memory()
    try:
        dev = resolve_device(device)
        dtype = resolve_dtype(precision.value, dev)
        gen = load_gen(model, device=dev)
        if decode and (vae or gen.config.vae).startswith("preset:"):
            typer.secho(f"warning: decoding with {vae or gen.config.vae}, a preset with RANDOM weights (a pipeline "
                        "check, not a model)", fg=typer.colors.YELLOW, err=True)
        result = generate(gen, output, num, cls, cfg_scale, steps, seed, dtype, vae, decode, batch_size)
    except (PvvaeError, ValueError) as e:
        fail(str(e))
    typer.echo(f"wrote {len(result.latent_files)} latent files" + (
        f", {len(result.videos)} videos and {result.contact_sheet}" if result.videos else "") + f" to {output}")
