"""``pvvae decode``: latent files, folders or globs -> mp4 videos (or PNG frames) at the original size and length."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.codec_options import DEVICE_HELP, Dtype, Tile, open_codec, prepare_output_dir, report
from pvvae_cli.cli.common import fail
from pvvae_cli.cli.help_format import escape


class Format(StrEnum):
    mp4 = "mp4"
    png = "png"


def decode(
    latents: Annotated[list[str], typer.Argument(help="Latent .safetensors files, folders (recursive) or globs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder; mirrors the input tree.")],
    model: Annotated[
        str | None,
        typer.Option(help=escape("Weights folder, hub repo id (owner/name, optionally @revision) or preset:NAME "
                                 "[default: the model named in the latents].")),
    ] = None,
    format: Annotated[
        Format, typer.Option("--format", help="mp4 (H.264 yuv420p at the source fps, which every player opens; an odd "
                                              "size grows by one edge row/column) or png (a folder of frames per "
                                              "clip, any size exactly).")
    ] = Format.mp4,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Compute precision (auto: bf16 on CUDA, fp32 on CPU).")] = Dtype.auto,
    tile: Annotated[Tile, typer.Option(help="Spatial tiling: auto tiles frames larger than --tile-size.")] = Tile.auto,
    tile_size: Annotated[int, typer.Option(help="Tile size in pixels (multiple of 16).")] = 512,
    tile_overlap: Annotated[int, typer.Option(help="Tile overlap = blend width in pixels (multiple of 16).")] = 128,
    encoded_size: Annotated[
        bool, typer.Option("--encoded-size", help="Keep the size given by encode's --size/--max-size.")
    ] = False,
    crf: Annotated[int, typer.Option(help="H.264 quality: 0 lossless, lower is better.")] = 12,
    chunk: Annotated[int, typer.Option(help="Latent frames decoded per step (speed vs memory; the output is the "
                                            "same).", min=1)] = 1,
    force: Annotated[bool, typer.Option("--force", help="Decode latents made by a different model config.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace stale outputs of pvvae decode (never a source "
                                                                "video or another file).")] = False,
    shard: Annotated[str | None, typer.Option(
        help="Decode only shard I of N of the latents (I/N, 0-based; or auto: torchrun's RANK/WORLD_SIZE or a Slurm "
             "array's task id), by a hash of each latent's path as encode --shard splits its inputs, so N processes "
             "share one folder without coordination.", metavar="I/N|auto")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Decode latent files back to videos with exactly the original frame count and size.

    Image sources come back as .png files. An existing output is skipped when it is up to date (decoded from this
    latent file with these options), else it needs --overwrite; the source video of a latent, or any file pvvae
    decode did not write, is never replaced. Runs sharing an output folder claim each output while they write it.

    A latent made by a different model (config hash or channel mismatch) is refused unless --force.
    """
    from pvvae_cli.codec.latents import LATENT_SUFFIX, LatentFormatError, read_meta
    from pvvae_cli.codec.runner import decoded_suffix, run_decode
    from pvvae_cli.codec.tiling import TileSpec
    from pvvae_cli.media.discovery import expand_inputs, plan_jobs
    from pvvae_cli.media.sharding import ShardError, parse_shard

    if not 0 <= crf <= 51:
        fail(f"--crf must be in 0..51, got {crf}")
    spec = TileSpec(tile_size, tile_overlap)
    try:
        spec.validate_basic()
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")
    try:
        part = parse_shard(shard) if shard is not None else None
    except ShardError as e:
        fail(str(e))
    files, failures = expand_inputs(latents, frozenset({LATENT_SUFFIX}))
    if part is not None:  # before any per-file work: each process reads only its own latents' headers
        total = len(files)
        files = [(src, rel) for src, rel in files if part.holds(rel.as_posix())]  # as Shard.select splits jobs
        if not quiet:
            typer.echo(f"shard {part}: {len(files)} of {total} latents", err=True)
        if total and not files:  # a shard left empty (fewer latents than shards) has nothing to do
            report("decoded", [], failures)
            return
    # One header read per latent of this shard, keeping only what planning needs: the frame rate (an image comes
    # back as .png) and the model names (without --model, the one that made them).
    fps, names, unreadable = {}, set(), []
    for src, _ in files:
        try:
            meta = read_meta(src)
        except LatentFormatError as e:
            unreadable.append(str(e))  # also reported per file by the runner
            continue
        fps[src] = meta.fps
        names.add(meta.model)
    if model is None:
        if len(names) > 1:
            fail(f"the latents were made by several models ({', '.join(sorted(names))}); pass --model")
        if not names:  # say why: nothing found, or nothing readable
            problems = [f"{given}: {why}" for given, why in failures] + unreadable
            fail("; ".join(problems[:3]) + ("" if len(problems) <= 3 else f" (and {len(problems) - 3} more)")
                 if problems else "no latent files given")
        model = names.pop()
    prepare_output_dir(output)
    codec = open_codec(model, device, dtype)
    try:
        spec.validate(codec.spatial_factor)
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")

    jobs, collisions = plan_jobs(files, output, lambda src: decoded_suffix(format.value, fps.get(src, 1.0)))
    outcomes = run_decode(codec, jobs, overwrite=overwrite, force=force, source_size=not encoded_size,
                          tile=tile.value, tile_spec=spec, crf=crf, quiet=quiet, chunk_latents=chunk)
    report("decoded", outcomes, failures + collisions)
