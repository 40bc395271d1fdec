"""``pvvae info``: describe a preset or a weights folder."""

from __future__ import annotations

from typing import Annotated

import typer

from pvvae_cli.cli.common import fail, load_model


def info(
    model: Annotated[
        str | None,
        typer.Argument(help="Weights folder, training run folder (its weights/), hub repo id (owner/name, optionally "
                            "@revision) or preset:NAME. Omit to list the presets."),
    ] = None,
) -> None:
    """Print the architecture and parameter count of a model, or the table of presets."""
    import torch

    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.models import registry
    from pvvae_cli.train.build import resolve_init

    if model is None:
        typer.echo(f"{'preset':<12} {'latent':<10} {'parameters':>12}")
        for name, cfg in registry.presets().items():
            with torch.device("meta"):  # count without allocating
                n = _num_parameters(registry.build_model(cfg))
            typer.echo(f"{name:<12} {cfg.tag:<10} {n:>12,}")
        return
    try:
        vae = load_model(resolve_init(model))  # a run folder means its exported weights, as for train --init
    except (ValueError, PvvaeError) as e:
        fail(str(e))
    cfg = vae.config
    name = getattr(cfg, "name", "-")
    typer.echo(f"model: {model}\nname: {name}\nlatent: {cfg.tag}\nparameters: {_num_parameters(vae):,}")
    for key, value in cfg.to_dict().items():
        typer.echo(f"  {key}: {value}")


def _num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
