"""``pvvae predict``: future frames from the beginning of a clip (or from a latent file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from pvvae_cli.cli.common import fail, load_model


class Padding(StrEnum):
    """Latents appended for the future frames."""

    auto = "auto"
    learnable = "learnable"
    gaussian = "gaussian"


def _largest_valid_context(n: int) -> int:
    return 1 + 4 * ((n - 1) // 4)


def predict(
    source: Annotated[
        Path, typer.Argument(help="Video (or image) whose first frames are the context, or a .safetensors latent "
                                  "file from `pvvae encode` (its latent frames are the context).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (.mp4): observed + predicted frames.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Weights folder, hub repo id or preset:NAME.")],
    context_frames: Annotated[
        int, typer.Option(help="Observed frames to encode: 1 + 4a (1, 5, 9, ...). Ignored for a latent file.")
    ] = 5,
    future_frames: Annotated[int, typer.Option(help="Frames to predict: a multiple of 4.")] = 12,
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
    seed: Annotated[int, typer.Option(help="Seed for Gaussian padding.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Predict future frames of a clip from its first frames (or from a latent file).

    Encodes the first --context-frames frames, appends padding latents for --future-frames frames, decodes, and
    writes observed + predicted frames at the source fps.

    When the video has the true future frames, prints PSNR and SSIM of the prediction against them and against
    the copy-the-last-observed-frame baseline.
    """
    from pvvae_cli.codec.prediction import check_prediction_frames, predict_future, score_prediction
    from pvvae_cli.eval.evaluation import resize_center_crop
    from pvvae_cli.media.video_io import (
        VideoReadError,
        frames_to_tensor,
        probe,
        read_clip,
        tensor_to_frames,
        write_video,
    )
    from pvvae_cli.runtime.device import resolve_device, resolve_dtype

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        fail(str(e))
    if not source.exists():
        fail(f"{source}: no such file")
    is_latent = source.suffix.lower() == ".safetensors"
    if not is_latent:
        try:
            check_prediction_frames(context_frames, future_frames)
        except ValueError as e:
            fail(str(e).replace("context frames", "--context-frames").replace("future frames", "--future-frames"))
    try:
        vae = load_model(model, device=str(dev)).to(dev).eval()
    except ValueError as e:
        fail(str(e))
    try:
        check_prediction_frames(1, future_frames, vae.config.temporal_compression)
    except ValueError as e:
        fail(str(e).replace("future frames", "--future-frames"))
    gen = torch.Generator(device=dev).manual_seed(seed)
    pad = padding.value

    truth = None  # (1, 3, K + g, H, W): observed frames plus the g true future frames the source has
    if is_latent:
        out, out_fps, observed = _predict_latent(source, vae, future_frames, pad, gen, dt)
        k = out.shape[2] - future_frames
        if side_by_side:
            typer.secho("warning: a latent context has no ground truth; writing without --side-by-side",
                        fg=typer.colors.YELLOW, err=True)
    else:
        try:
            info = probe(source)
            available = info.num_frames - start
            if available < context_frames:
                hint = (f"use --context-frames {_largest_valid_context(available)} or less"
                        if available >= 1 else "use a smaller --start")
                fail(f"{source}: has {info.num_frames} frames, so {context_frames} context frames from frame "
                     f"{start} do not fit; {hint}")
            raw, src_fps = read_clip(source, start=start, num_frames=min(available, context_frames + future_frames))
        except VideoReadError as e:
            fail(str(e))
        x = frames_to_tensor(raw)
        if size is not None:
            if size < 16 or size % 16:
                fail(f"--size must be a positive multiple of 16, got {size}")
            x = resize_center_crop(x, size)
        s = vae.config.spatial_compression
        if x.shape[2] % s or x.shape[3] % s:
            fail(f"{source}: frames are {x.shape[3]}x{x.shape[2]}, not multiples of {s}; pass --size N "
                 f"(a multiple of {s}) to resize and centre-crop")
        x = x.unsqueeze(0)  # (1, 3, K + g, H, W)
        k = context_frames
        try:
            out = predict_future(vae, x[:, :, :k], future_frames, pad, gen, dt).cpu()
        except ValueError as e:
            fail(str(e))
        out_fps = fps or (src_fps if src_fps > 0 else 8.0)
        observed = out[:, :, :k] if decoded_context else x[:, :, :k]
        if x.shape[2] > k:
            truth = x
    if fps:
        out_fps = fps

    g = 0 if truth is None else truth.shape[2] - k
    if g:
        scores, _ = score_prediction(out[:, :, k : k + g], truth[:, :, k:], truth[:, :, k - 1 : k])
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

    video = torch.cat([observed, out[:, :, k:]], dim=2)[0]  # (3, K + F, H, W)
    frames = tensor_to_frames(video)
    if side_by_side and not is_latent:
        if g == future_frames:
            frames = np.concatenate([tensor_to_frames(truth[0]), frames], axis=2)  # ground truth | output
        else:
            typer.secho(f"warning: {source} lacks the {future_frames} true future frames; writing without "
                        "--side-by-side", fg=typer.colors.YELLOW, err=True)
    try:
        write_video(output, frames, out_fps)
    except (ValueError, OSError) as e:
        fail(f"{output}: {e}")
    layout = " (ground truth | prediction)" if frames.shape[2] != video.shape[3] else ""
    typer.echo(f"wrote {output}: {k} observed + {future_frames} predicted frames, {frames.shape[2]}x{frames.shape[1]}"
               f"{layout}, {out_fps:g} fps")


def _predict_latent(source: Path, vae, future_frames: int, pad: str, gen: torch.Generator, dt: torch.dtype):
    """Decode a latent file's context plus the predicted future: (output (1, 3, K + F, H, W), fps, observed)."""
    from pvvae_cli.codec.latents import LatentFormatError, config_hash, load_latent, weights_hash
    from pvvae_cli.codec.prediction import predict_from_latents

    try:
        latent, meta = load_latent(source)
    except LatentFormatError as e:
        fail(str(e))
    if meta.config_hash != config_hash(vae.config):
        fail(f"{source}: encoded by {meta.model} ({meta.model_tag}, config {meta.config_hash}), which is not this "
             f"model's architecture ({vae.config.tag}, config {config_hash(vae.config)}); pass --model {meta.model}")
    if meta.weights_hash and meta.weights_hash != weights_hash(vae):
        typer.secho(f"warning: {source} was encoded by other weights of this architecture ({meta.model}); the "
                    "prediction decodes it with these", fg=typer.colors.YELLOW, err=True)
    z = latent.unsqueeze(0)  # (1, C, t, h, w)
    if meta.normalized:
        z = vae.denormalize_latents(z)  # padding tokens live in the raw latent space
    try:
        out = predict_from_latents(vae, z, future_frames, pad, gen, dt).cpu()
    except ValueError as e:
        fail(str(e))
    if meta.fit == "pad" and meta.resize is None and any(meta.pad):
        top, bottom, left, right = meta.pad  # undo the encoder's padding to multiples of 16
        out = out[:, :, :, top : out.shape[3] - bottom, left : out.shape[4] - right]
    k = out.shape[2] - future_frames
    return out, (meta.fps if meta.fps > 0 else 8.0), out[:, :, :k]
