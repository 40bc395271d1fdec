"""Helpers shared by the CLI commands: one-line user errors and model loading."""

from __future__ import annotations

import typer

from pvvae_cli.models.pvvae.config import PRESETS


class UserError(Exception):
    """A mistake the user can fix; printed as one line (no traceback), exit code 2."""


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_model(spec: str, device: str = "cpu"):
    """A weights folder, a hub repo id, or ``preset:NAME`` (random weights: for tests and benchmarks only)."""
    from pvvae_cli.models.pvvae.model import VideoVAE

    if spec.startswith("preset:"):
        name = spec.split(":", 1)[1]
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        typer.secho(f"warning: {spec} has RANDOM weights (useful for tests and benchmarks, not as a model)",
                    fg=typer.colors.YELLOW, err=True)
        return VideoVAE.from_preset(name).eval()
    return VideoVAE.from_pretrained(spec, device=device)
