"""Pieces shared by ``pvvae encode`` and ``pvvae decode``: option enums, model loading, output checks, summary."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from pvvae_cli.cli.common import check_can_create, fail, load_model, model_or_default

# --device of the batch commands (encode, decode, predict): see runtime.distributed.process_device.
DEVICE_HELP = ("auto, cpu, cuda or cuda:N. Under torchrun or Slurm tasks, cuda (and auto on a GPU host) is the "
               "process's own GPU, cuda:LOCAL_RANK.")


class Dtype(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Tile(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


def open_codec(model: str | None, device: str, dtype: Dtype):
    """Resolve device and dtype (``runtime.distributed.process_device``: one GPU per process under torchrun or
    Slurm; ``runtime.device.resolve_dtype``), load the model (the shipped default when ``model`` is None), and wrap
    it in a ``Codec``."""

    from pvvae_cli.codec.pipeline import Codec
    from pvvae_cli.runtime.allocator import keep_freed_memory
    from pvvae_cli.runtime.device import resolve_dtype
    from pvvae_cli.runtime.distributed import process_device

    keep_freed_memory()  # several times faster elementwise ops on video-sized tensors (see allocator.py)

    model = model_or_default(model)
    try:
        dev = process_device(device)
        dt = resolve_dtype(dtype.value, dev)
        vae = load_model(model, device=str(dev))
    except (ValueError, OSError) as e:
        fail(str(e))
    return Codec(vae, model, dev, dt)


def prepare_output_dir(output: Path) -> None:
    """Fail with one line, before any work, if the output folder cannot be created or written. Creates nothing:
    a run that stops on a usage error leaves no empty folder (the writers create what they write into)."""
    check_can_create(output)


def report(done_word: str, outcomes, failures: list[tuple[str, str]]) -> None:
    """Print warnings, failures and a one-line summary to stderr; exit 1 if anything failed."""
    for o in outcomes:
        for w in o.warnings:
            typer.secho(f"warning: {o.job.source}: {w}", fg=typer.colors.YELLOW, err=True)
    for o in outcomes:
        if o.status == "skipped" and o.reason != "up to date":  # e.g. busy: claimed by another run
            typer.echo(f"skipped: {o.job.source}: {o.reason}", err=True)
    failed = [(str(o.job.source), o.reason) for o in outcomes if o.status == "failed"] + failures
    for path, reason in failed:
        typer.secho(f"failed: {path}: {reason}", fg=typer.colors.RED, err=True)
    done = sum(o.status not in ("failed", "skipped") for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    typer.echo(f"{done_word} {done}, skipped {skipped}, failed {len(failed)}", err=True)
    if failed:
        raise typer.Exit(1)
