"""``pvvae download``: fetch a weights repo from the Hugging Face Hub into the cache (or a folder) ahead of use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import fail


def download(
    repo_id: Annotated[str, typer.Argument(help="Hub repo id owner/name, optionally owner/name@revision.")],
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or 40-hex commit (default: the repo's default branch).")
    ] = None,
    local_dir: Annotated[
        Path | None,
        typer.Option(help="Also place the files in this folder (a plain weights folder for --model) "
                          "(default: only the hub cache, HF_HUB_CACHE).", file_okay=False),
    ] = None,
) -> None:
    """Download a model repo from the hub (or find it in the cache) and check it; prints the folder.

    Fetches config.json, model.safetensors and README.md (or a diffusers VAE) and checks they form a weights folder.
    Use the printed folder, or the repo id, as --model; a cached revision also loads offline with HF_HUB_OFFLINE=1.
    The hub is HF_ENDPOINT (default https://huggingface.co)."""
    from pvvae_cli.models import hub

    try:
        snapshot = hub.download(hub.parse_hub_ref(repo_id, revision), local_dir=local_dir)
    except ValueError as e:
        fail(str(e))
    typer.secho(f"{snapshot.label}: config.json, model.safetensors ready", err=True)
    typer.echo(str(snapshot.directory))
