"""``pvvae decode``: latent files, folders or globs -> mp4 videos (or PNG frames) at the original size and length."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.codec_options import Dtype, Tile, open_codec, prepare_output_dir, report
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
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Compute precision (auto: bf16 on CUDA, fp32 on CPU).")] = Dtype.auto,
    tile: Annotated[Tile, typer.Option(help="Spatial tiling: auto tiles frames larger than --tile-size.")] = Tile.auto,
    tile_size: Annotated[int, typer.Option(help="Tile size in pixels (multiple of 16).")] = 512,
    tile_overlap: Annotated[int, typer.Option(help="Tile overlap = blend width in pixels (multiple of 16).")] = 128,
    encoded_size: Annotated[
        bool, typer.Option("--encoded-size", help="Keep the size given by encode's --size/--max-size.")
    ] = False,
    crf: Annotated[int, typer.Option(help="H.264 quality: 0 lossless, lower is better.")] = 12,
    force: Annotated[bool, typer.Option("--force", help="Decode latents made by a different model config.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace stale outputs of pvvae decode (never a source "
                                                                "video or another file).")] = False,
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

    if not 0 <= crf <= 51:
        fail(f"--crf must be in 0..51, got {crf}")
    spec = TileSpec(tile_size, tile_overlap)
    try:
        spec.validate_basic()
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")
    files, failures = expand_inputs(latents, frozenset({LATENT_SUFFIX}))
    metas, unreadable = {}, []
    for src, _ in files:
        try:
            metas[src] = read_meta(src)
        except LatentFormatError as e:
            unreadable.append(str(e))  # also reported per file by the runner
    if model is None:
        names = sorted({m.model for m in metas.values()})
        if len(names) > 1:
            fail(f"the latents were made by several models ({', '.join(names)}); pass --model")
        if not names:  # say why: nothing found, or nothing readable
            problems = [f"{given}: {why}" for given, why in failures] + unreadable
            fail("; ".join(problems[:3]) + ("" if len(problems) <= 3 else f" (and {len(problems) - 3} more)")
                 if problems else "no latent files given")
        model = names[0]
    prepare_output_dir(output)
    codec = open_codec(model, device, dtype)
    try:
        spec.validate(codec.spatial_factor)
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")

    def suffix_for(src: Path) -> str:
        meta = metas.get(src)
        return decoded_suffix(format.value, meta.fps if meta else 1.0)

    jobs, collisions = plan_jobs(files, output, suffix_for)
    outcomes = run_decode(codec, jobs, overwrite=overwrite, force=force, source_size=not encoded_size,
                          tile=tile.value, tile_spec=spec, crf=crf, quiet=quiet)
    report("decoded", outcomes, failures + collisions)
