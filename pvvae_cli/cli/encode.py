"""``pvvae encode``: video/image files, folders or globs -> one safetensors latent file per input."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.codec_options import DEVICE_HELP, Dtype, Tile, open_codec, prepare_output_dir, report
from pvvae_cli.cli.common import DEFAULT_MODEL_HELP, check_can_create, fail
from pvvae_cli.cli.help_format import escape


class Fit(StrEnum):
    pad = "pad"
    crop = "crop"
    resize = "resize"


def encode(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder; mirrors the input tree.")],
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Video/image files, folders (recursive) or globs (or --files-from).", show_default=False)] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help=escape(
            "Weights folder, hub repo id (owner/name, optionally @revision), or preset:NAME (random weights, for "
            f"tests). {DEFAULT_MODEL_HELP}"))
    ] = None,
    ext: Annotated[
        list[str] | None, typer.Option("--ext", help="Only inputs with this suffix (repeatable), e.g. --ext mp4.")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Compute precision (auto: bf16 on CUDA, fp32 on CPU).")] = Dtype.auto,
    frames: Annotated[int | None, typer.Option("--frames", help="At most this many frames per clip.")] = None,
    start: Annotated[int, typer.Option(help="First source frame.")] = 0,
    stride: Annotated[int, typer.Option(help="Take every N-th source frame.")] = 1,
    fps: Annotated[float | None, typer.Option(help="Resample to this frame rate (instead of --stride).")] = None,
    size: Annotated[str | None, typer.Option(help="Resize frames to HEIGHTxWIDTH first, e.g. 256x448.")] = None,
    max_size: Annotated[int | None, typer.Option(help="Shrink so the longer side is at most this.")] = None,
    fit: Annotated[Fit, typer.Option(help="Reach multiples of 16 by pad (undone on decode), crop, resize.")] = Fit.pad,
    tile: Annotated[Tile, typer.Option(help="Spatial tiling: auto tiles frames larger than --tile-size.")] = Tile.auto,
    tile_size: Annotated[int, typer.Option(help="Tile size in pixels (multiple of 16).")] = 512,
    tile_overlap: Annotated[int, typer.Option(help="Tile overlap = blend width in pixels (multiple of 16).")] = 128,
    sample: Annotated[bool, typer.Option("--sample", help="Store a posterior sample instead of the mode.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --sample (combined with each file's path).")] = 0,
    normalize: Annotated[
        bool | None,
        typer.Option("--normalize/--no-normalize",
                     help=escape("Store normalised latents [default: if the model has stats].")),
    ] = None,
    moments: Annotated[bool, typer.Option("--moments", help="Also store the posterior mean and logvar.")] = False,
    batch_size: Annotated[int, typer.Option(help="Stack up to N consecutive clips of the same shape.")] = 1,
    chunk: Annotated[int, typer.Option(help="Latent frames per streamed chunk (speed/memory only).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Re-encode existing latent files (never replaces a "
                                                                "file that is not a latent).")] = False,
    manifest: Annotated[Path | None, typer.Option(help="Write a JSONL manifest of the outputs here (with --shard: "
                                                       "one per shard, NAME.shard-I-of-N.jsonl).")] = None,
    shard: Annotated[str | None, typer.Option(
        help="Encode only shard I of N of the inputs (I/N, 0-based; or auto: torchrun's RANK/WORLD_SIZE or a Slurm "
             "array's task id), so N processes share one dataset without coordination.", metavar="I/N|auto")] = None,
    files_from: Annotated[Path | None, typer.Option(
        "--files-from", dir_okay=False, help="Read the inputs from this list instead of walking folders: one path per "
        "line, or a .jsonl manifest of an earlier encode (its input field). With --shard, each process keeps its "
        "shard's lines while reading, before any file is touched.")] = None,
    input_root: Annotated[Path, typer.Option(
        "--input-root", file_okay=False, help="With --files-from: relative paths are below this folder, and outputs "
        "mirror each path relative to it.")] = Path("."),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Encode videos and images into latent files (one .safetensors per input, streamed chunk by chunk).

    Re-running skips outputs that are up to date (same input file, model and options). An existing output made
    otherwise needs --overwrite; a file that is not a latent is never replaced. Runs sharing an output folder
    claim each output while they write it (one claimed by another run is skipped as busy).

    Bad inputs are reported and skipped; the exit code is 1 if any input failed (2 for a usage error, before any
    work).
    """
    from pvvae_cli.codec.framing import parse_size
    from pvvae_cli.codec.latents import LATENT_SUFFIX
    from pvvae_cli.codec.pipeline import EncodeOptions
    from pvvae_cli.codec.runner import run_encode, write_manifest
    from pvvae_cli.codec.tiling import TileSpec
    from pvvae_cli.media.discovery import expand_inputs, media_exts, plan_jobs
    from pvvae_cli.media.sharding import ShardError, parse_shard

    try:
        exts = media_exts()
        if ext:
            exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in ext)
        options = EncodeOptions(
            start=start, num_frames=frames, stride=stride, fps=fps, size=parse_size(size) if size else None,
            max_size=max_size, fit=fit.value, tile=tile.value, tile_size=tile_size, tile_overlap=tile_overlap,
            sample=sample, seed=seed, normalize=normalize, save_moments=moments, chunk_latents=chunk,
        )
        _validate(options, batch_size)
        part = parse_shard(shard) if shard is not None else None
    except (ValueError, ShardError) as e:
        fail(str(e))
    if bool(inputs) == (files_from is not None):
        fail("give the inputs (files, folders, globs) or --files-from LIST, not both" if inputs else
             "give the inputs: files, folders or globs, or --files-from LIST")
    prepare_output_dir(output)
    if manifest is not None:
        if part is not None:
            manifest = part.manifest_path(manifest)
        check_can_create(manifest.parent, "--manifest")
    codec = open_codec(model, device, dtype)  # under torchrun or Slurm: this process's GPU (one per process)
    try:
        TileSpec(tile_size, tile_overlap).validate(codec.spatial_factor)
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")
    if files_from is not None:
        from pvvae_cli.media.file_list import FileListError, files_from_list

        try:  # the shard is taken while the list is read: nothing of another shard is kept or touched
            files, failures, total = files_from_list(files_from, input_root, exts,
                                                     part.holds if part is not None else lambda _rel: True)
        except FileListError as e:
            fail(str(e))
        jobs, collisions = plan_jobs(files, output, lambda _: LATENT_SUFFIX, resolve=False)
    else:
        files, failures = expand_inputs(inputs, exts)
        jobs, collisions = plan_jobs(files, output, lambda _: LATENT_SUFFIX)
        total = len(jobs)
        if manifest is not None and any(manifest.resolve() == j.source.resolve() for j in jobs):
            fail(f"--manifest {manifest} is one of the inputs: it is never overwritten; choose another path")
        if part is not None:
            jobs = part.select(jobs)
    if part is not None and not quiet:
        typer.echo(f"shard {part}: {len(jobs)} of {total} inputs", err=True)
    outcomes = run_encode(codec, jobs, options, overwrite=overwrite, batch_size=batch_size, quiet=quiet)
    if manifest is not None:
        n = write_manifest(manifest, outcomes)
        if not quiet:
            typer.echo(f"manifest: {manifest} ({n} entries)", err=True)
    report("encoded", outcomes, failures + collisions)


def _validate(options, batch_size: int) -> None:
    """Usage errors, found before the model loads or any file is read."""
    from pvvae_cli.codec.tiling import TileSpec

    if options.start < 0 or options.stride < 1 or (options.num_frames is not None and options.num_frames < 1):
        raise ValueError("--start must be >= 0, --stride >= 1 and --frames >= 1")
    if options.fps is not None and (options.fps <= 0 or options.stride != 1):
        raise ValueError("--fps must be > 0 and cannot be combined with --stride")
    if options.size is not None and options.max_size is not None:
        raise ValueError("give either --size or --max-size, not both")
    if options.max_size is not None and options.max_size < 1:
        raise ValueError(f"--max-size must be >= 1, got {options.max_size}")
    try:
        TileSpec(options.tile_size, options.tile_overlap).validate_basic()
    except ValueError as e:
        raise ValueError(f"--tile-size/--tile-overlap: {e}") from None
    if batch_size < 1 or options.chunk_latents < 1:
        raise ValueError("--batch-size and --chunk must be >= 1")
