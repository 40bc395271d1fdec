"""Helpers shared by the CLI commands: one-line user errors, output checks before the work, and model loading."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def check_can_create(path: Path, option: str = "--output") -> None:
    """Fail (before any work, creating nothing) unless ``path`` exists as a writable folder or can be created:
    its nearest existing ancestor must be a writable folder."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    target = path if path.exists() else p
    if not target.is_dir():
        fail(f"{option} {path}: {target} is not a folder; choose another {option}")
    if not os.access(target, os.W_OK | os.X_OK):
        fail(f"{option} {path}: {target} is not writable; choose another {option} or fix its permissions")


def check_output_file(path: Path, inputs: tuple[Path, ...] = (), option: str = "--output") -> None:
    """Fail before the work unless ``path`` is a video/image file name (or a folder path for PNG frames) that can
    be written and is none of ``inputs``."""
    from pvvae_cli.media.writer import output_kind

    try:
        output_kind(path)
    except ValueError as e:
        fail(f"{option}: {e}")
    if path.is_dir() and output_kind(path) != "frames":
        fail(f"{option} {path} is a folder; give a file name such as {path / 'out.mp4'}")
    for src in inputs:
        if src.exists() and path.exists() and path.resolve() == src.resolve():
            fail(f"{option} {path} is the input file: it is never overwritten; choose another {option}")
    check_can_create(path.parent, option)


# What a --model option given nothing means, for the commands' help (escape it: rich reads "[...]" as markup). It
# names models/default.py's DEFAULT_MODEL and ENV_VAR as text: importing that module for --help would load torch.
DEFAULT_MODEL_HELP = "[default: the shipped model, weights/pvvae-small, or $PVVAE_MODEL]"


def model_or_default(spec: str | None) -> str:
    """``spec``, or the shipped default model when a command is given no ``--model`` (``models/default.py``); fails
    with one line when there is none."""
    if spec is not None:
        return spec
    from pvvae_cli.models.default import default_model
    from pvvae_cli.models.weights import WeightsError

    try:
        return default_model()
    except WeightsError as e:
        fail(str(e))


def load_model(spec: str, device: str = "cpu"):
    """``pvvae_cli.models.registry.load_model`` (a weights folder, a hub repo id, or ``preset:NAME``), plus the
    warning on stderr that a preset has random weights. Errors (``ValueError``s: ``WeightsError``, unknown preset)
    propagate; each command turns them into one line with ``fail``. Imports torch only when called.

    A preset's random weights are drawn from a fixed seed: every command (encode, decode, predict, eval) and every
    run builds the same model, so a latent encoded with ``preset:NAME`` decodes with ``preset:NAME``."""
    import torch

    from pvvae_cli.models.registry import PRESET_PREFIX
    from pvvae_cli.models.registry import load_model as load

    if spec.startswith(PRESET_PREFIX):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = load(spec, device=device)
    else:
        model = load(spec, device=device)
    if spec.startswith(PRESET_PREFIX):
        typer.secho(f"warning: {spec} has RANDOM weights (useful for tests and benchmarks, not as a model)",
                    fg=typer.colors.YELLOW, err=True)
    return model
