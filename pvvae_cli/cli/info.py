"""``pvvae info``: describe a preset or a weights folder."""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from pvvae_cli.cli.common import fail, load_model
from pvvae_cli.models.pvvae.config import PRESETS


def info(
    model: Annotated[
        str | None,
        typer.Argument(help="Weights folder, hub repo id or preset:NAME. Omit to list the presets."),
    ] = None,
) -> None:
    """Print the architecture and parameter count of a model, or the table of presets."""
    from pvvae_cli.models.pvvae.model import VideoVAE

    if model is None:
        typer.echo(f"{'preset':<12} {'latent':<10} {'parameters':>12}")
        for name, cfg in PRESETS.items():
            with torch.device("meta"):  # count without allocating
                n = VideoVAE(cfg).num_parameters()
            typer.echo(f"{name:<12} {cfg.tag:<10} {n:>12,}")
        return
    try:
        vae = load_model(model)
    except ValueError as e:
        fail(str(e))
    cfg = vae.config
    typer.echo(f"model: {model}\nname: {cfg.name}\nlatent: {cfg.tag}\nparameters: {vae.num_parameters():,}")
    for key, value in cfg.to_dict().items():
        typer.echo(f"  {key}: {value}")
