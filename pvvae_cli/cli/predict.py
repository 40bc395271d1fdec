"""``pvvae predict``: future frames from the beginning of a clip (or from a latent file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.codec_options import DEVICE_HELP, Tile
from pvvae_cli.cli.common import DEFAULT_MODEL_HELP, check_output_file, fail, load_model, model_or_default
from pvvae_cli.cli.help_format import escape
from pvvae_cli.models.pvvae.config import PADDING_MODES

# Latents appended for the future frames: the model's own mode (auto) or one of the padding modes models know.
Padding = StrEnum("Padding", [(m, m) for m in ("auto", *PADDING_MODES)])


def _flags(message: str) -> str:
    """A frame-rule message of ``codec.prediction`` in terms of this command's options."""
    return message.replace("context frames", "--context-frames").replace("future frames", "--future-frames")


def predict(
    source: Annotated[
        Path, typer.Argument(help="Video (or image) whose first frames are the context, or a .safetensors latent "
                                  "file from `pvvae encode` (its latent frames are the context).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (.mp4): observed + predicted frames.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=escape(
        f"Weights folder, hub repo id (owner/name, optionally @revision) or preset:NAME. {DEFAULT_MODEL_HELP}"
    ))] = None,
    context_frames: Annotated[
        int, typer.Option(help="Observed frames to encode: 1 + 4a (1, 5, 9, ...) for t4 models. Ignored for a "
                               "latent file.")
    ] = 5,
    future_frames: Annotated[int, typer.Option(help="Frames to predict: a multiple of 4 for t4 models.")] = 12,
    start: Annotated[int, typer.Option(help="First source frame of the context.")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Resize the short side to SIZE and centre-crop a square (multiple of 16). "
                                      "Default: native size, which must be a multiple of 16.")
    ] = None,
    padding: Annotated[
        Padding, typer.Option(help="Latents for the future: the model's learned padding tokens, Gaussian samples, "
                                   "or auto (what the model was trained with).")
    ] = Padding.auto,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Write ground truth (left) next to the output (right) when the "
                                                  "video has the future frames.")
    ] = False,
    decoded_context: Annotated[
        bool, typer.Option("--decoded-context", help="Write the model's reconstruction of the observed frames "
                                                     "instead of the observed frames themselves.")
    ] = False,
    fps: Annotated[
        float | None, typer.Option(help="Output frame rate. Default: the source's (8 for an image).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Predict from a latent file made by a different model config.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for Gaussian padding.")] = 0,
    tile: Annotated[Tile, typer.Option(help="Spatial tiling: auto tiles frames larger than --tile-size.")] = Tile.auto,
    tile_size: Annotated[int, typer.Option(help="Tile size in pixels (multiple of 16).")] = 512,
    tile_overlap: Annotated[int, typer.Option(help="Tile overlap = blend width in pixels (multiple of 16).")] = 128,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Predict future frames of a clip from its first frames (or from a latent file).

    Encodes the first --context-frames frames, appends padding latents for --future-frames frames, decodes, and
    writes observed + predicted frames at the source fps. Encoding and decoding stream a few frames at a time and
    tile large frames, as pvvae encode and decode do.

    When the video has the true future frames, prints PSNR and SSIM of the prediction against them and against
    the copy-the-last-observed-frame baseline.
    """
    import math

    import torch

    from pvvae_cli.codec.pipeline import Codec
    from pvvae_cli.codec.prediction import check_prediction_frames, predict_clip, predict_latent_file
    from pvvae_cli.codec.tiling import TileSpec
    from pvvae_cli.media.writer import output_kind, write_video
    from pvvae_cli.runtime.device import resolve_dtype
    from pvvae_cli.runtime.distributed import process_device

    # Every usage error before the model loads and the compute starts.
    if start < 0:
        fail(f"--start must be >= 0, got {start}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        fail(f"--fps must be a positive frame rate, got {fps:g}")
    spec = TileSpec(tile_size, tile_overlap)
    try:
        spec.validate_basic()
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")
    try:
        dev = process_device(device)  # one GPU per process under torchrun or Slurm
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        fail(str(e))
    if not source.exists():
        fail(f"{source}: no such file")
    check_output_file(output, inputs=(source,))
    if output_kind(output) == "image":
        fail(f"--output {output}: predict writes several frames; use a video (.mp4) or a folder path for PNG frames")
    is_latent = source.suffix.lower() == ".safetensors"
    model = model_or_default(model)
    try:
        vae = load_model(model, device=str(dev)).to(dev).eval()
    except ValueError as e:
        fail(str(e))
    tc = vae.config.temporal_compression
    try:
        spec.validate(vae.config.spatial_compression)
    except ValueError as e:
        fail(f"--tile-size/--tile-overlap: {e}")
    try:
        check_prediction_frames(1 if is_latent else context_frames, future_frames, tc)
    except ValueError as e:
        fail(_flags(str(e)))
    gen = torch.Generator(device=dev).manual_seed(seed)
    try:
        if is_latent:
            pred = predict_latent_file(Codec(vae, model, dev, dt), source, future_frames, padding.value, gen, force,
                                       tile.value, spec)
        else:
            pred = predict_clip(vae, source, context_frames, future_frames, start, size, padding.value, gen, dt,
                                tile.value, spec)
    except ValueError as e:
        fail(str(e))
    for w in pred.warnings:
        typer.secho(f"warning: {source}: {w}", fg=typer.colors.YELLOW, err=True)

    k, g = pred.context_frames, pred.true_future_frames
    scores = pred.score()
    if scores is not None:
        partial = "" if g == future_frames else f" (the source has only {g} of the {future_frames} future frames)"
        typer.echo(f"predicted frames {k}..{k + g - 1} ({g}) vs ground truth{partial}:")
        typer.echo(f"  {'':<18}{'PSNR (dB)':>10}{'SSIM':>9}")
        typer.echo(f"  {'prediction':<18}{scores.psnr:>10.2f}{scores.ssim:>9.4f}")
        typer.echo(f"  {'copy last frame':<18}{scores.copy_psnr:>10.2f}{scores.copy_ssim:>9.4f}")
        diff = scores.psnr - scores.copy_psnr
        verdict = "beats" if scores.beats_copy else "does not beat"
        typer.echo(f"prediction {verdict} copying the last observed frame (PSNR {diff:+.2f} dB)")
    elif not is_latent:
        typer.echo(f"{source}: no frames after the context, so no ground truth to score against")

    if side_by_side and g != future_frames:
        why = "a latent context has no ground truth" if is_latent else \
            f"{source} lacks the {future_frames} true future frames"
        typer.secho(f"warning: {why}; writing without --side-by-side", fg=typer.colors.YELLOW, err=True)
        side_by_side = False
    frames = pred.frames(decoded_context, side_by_side)
    out_fps = fps if fps is not None else pred.fps
    try:
        notes = write_video(output, frames, out_fps)
    except (ValueError, OSError) as e:
        fail(f"{output}: {e}")
    for note in notes:
        typer.secho(f"warning: {output}: {note}", fg=typer.colors.YELLOW, err=True)
    layout = " (ground truth | prediction)" if side_by_side else ""
    typer.echo(f"wrote {output}: {k} observed + {future_frames} predicted frames, {frames.shape[2]}x{frames.shape[1]}"
               f"{layout}, {out_fps:g} fps")
