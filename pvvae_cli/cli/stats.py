"""``pvvae stats``: per-channel mean/std of a set of latent files (shardable, mergeable), optionally written into a
weights folder's config.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import fail
from pvvae_cli.cli.help_format import escape


def stats(
    inputs: Annotated[list[str], typer.Argument(
        help="A folder of latent files (recursive), a .jsonl manifest or a .txt list; with --merge: stats .json "
             "files.", metavar="LATENTS")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help=escape("Write the statistics to this JSON file (atomically) [default: print them].")
    )] = None,
    merge: Annotated[bool, typer.Option(
        "--merge", help="Combine the stats .json files given (e.g. one per --shard) into one.")] = False,
    shard: Annotated[str | None, typer.Option(
        help="Only shard I of N of the latents (I/N, 0-based; or auto: torchrun's or Slurm's place), split as "
             "encode/decode --shard split files; combine the shards' outputs with --merge.",
        metavar="I/N|auto")] = None,
    write_to: Annotated[Path | None, typer.Option(
        "--write-to", help="Also set latents_mean/latents_std in this weights folder's config.json; it must be the "
                           "model that made the latents (same config hash). This changes the folder's config hash.",
        metavar="WEIGHTS_DIR")] = None,
    model: Annotated[str | None, typer.Option(
        help=escape("For latents stored normalised: the model (weights folder, hub id or preset:NAME) whose "
                    "latents_mean/std undo that [default: the model named in the latents].")
    )] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Per-channel mean and std of the latents, read one file at a time.

    The statistics are of the raw latents (the encoder's output), the space of a weights folder's latents_mean and
    latents_std: files stored normalised (encode --normalize, the default for a model with statistics) are
    de-normalised first with their model's statistics. All files must come from one VAE (same config hash).

    The JSON holds, per channel, the count, mean, M2 (sum of squared deviations) and std (population), plus the
    number of files and the VAE (model, config hash): --merge combines shards' files as if computed at once (up to
    float64 rounding).
    """
    from pvvae_cli.codec.latent_stats import (
        ChannelStats,
        compute_stats,
        read_stats,
        write_stats,
        write_to_weights,
    )
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.gen.data import find_latent_files
    from pvvae_cli.media.sharding import parse_shard

    try:
        if write_to is not None:  # before the work: a folder that is no weights folder fails at once
            from pvvae_cli.models.weights import CONFIG_NAME, read_config

            read_config(write_to / CONFIG_NAME)
        if merge:
            if shard is not None:
                fail("--shard applies to latents, not to --merge")
            result = ChannelStats()
            for path in inputs:
                result = result.merge(read_stats(path))
        else:
            if len(inputs) != 1:
                fail(f"give one LATENTS folder, manifest or list (got {len(inputs)}); to combine stats files, "
                     "pass --merge")
            part = parse_shard(shard) if shard is not None else None
            files, root = find_latent_files(inputs[0])
            if part is not None:
                files = [f for f in files if part.holds(_relative(f, root))]
            result = compute_stats(files, lambda meta: _config(model or meta.model))
        if output is not None:
            write_stats(result, output)
        else:
            import json

            typer.echo(json.dumps(result.to_dict(), indent=2))
        if write_to is not None:
            write_to_weights(result, write_to)
    except PvvaeError as e:  # LatentStatsError, LatentFormatError, GenDataError, ShardError, WeightsError
        fail(str(e))
    if not quiet:
        where = f" -> {output}" if output is not None else ""
        extra = f"; latents_mean/std written to {write_to}" if write_to is not None else ""
        norm = f", {result.normalized_files} de-normalised" if result.normalized_files else ""
        typer.echo(f"stats of {result.files} files ({result.count} values per channel{norm}){where}{extra}", err=True)


def _relative(path: Path, root: Path) -> str:
    """The key a shard is chosen by: the path relative to the root (as ``decode --shard``)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().relative_to(root).as_posix()


def _config(spec: str):
    """The config of the model ``spec`` (a preset without building it; otherwise the loaded model's)."""
    from pvvae_cli.models.registry import PRESET_PREFIX, get_preset, load_model

    if spec.startswith(PRESET_PREFIX):
        return get_preset(spec[len(PRESET_PREFIX):])
    return load_model(spec).config
