"""Helpers shared by the CLI commands: one-line user errors and model loading."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_model(spec: str, device: str = "cpu"):
    """``pvvae_cli.models.registry.load_model`` (a weights folder, a hub repo id, or ``preset:NAME``), plus the
    warning on stderr that a preset has random weights. Errors (``ValueError``s: ``WeightsError``, unknown preset)
    propagate; each command turns them into one line with ``fail``. Imports torch only when called."""
    from pvvae_cli.models.registry import PRESET_PREFIX
    from pvvae_cli.models.registry import load_model as load

    model = load(spec, device=device)
    if spec.startswith(PRESET_PREFIX):
        typer.secho(f"warning: {spec} has RANDOM weights (useful for tests and benchmarks, not as a model)",
                    fg=typer.colors.YELLOW, err=True)
    return model
