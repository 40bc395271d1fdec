"""``pvvae eval``: reconstruction (and prediction) quality of models side by side, or FVD/KVD of two video sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvvae_cli.cli.common import DEFAULT_MODEL_HELP, fail, load_model, model_or_default
from pvvae_cli.cli.help_format import escape
from pvvae_cli.cli.predict import Padding

# The protocols' messages start with the field at fault ("frames must be ..."); the user typed an option.
_FLAGS = {"frames": "--frames", "size": "--size", "start": "--start", "windows": "--windows",
          "batch size": "--batch-size", "max videos": "--max-videos", "context frames": "--predict-context",
          "future frames": "--frames minus --predict-context", "speed frames": "--speed-frames"}


def _flags(message: str) -> str:
    for name, flag in _FLAGS.items():
        if message.startswith(f"{name} must"):
            return flag + message[len(name):]
    return message


def _say(message: str) -> None:
    typer.echo(message, err=True)


def evaluate(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Videos, or folders searched recursively for videos.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help=escape(
            "Weights folder, hub repo id (owner/name, optionally @revision) or preset:NAME; repeat to compare "
            f"models. {DEFAULT_MODEL_HELP}")),
    ] = None,
    frames: Annotated[int, typer.Option(help="Frames per clip, from --start (1 + 4k for t4; the paper: 17).")] = 17,
    size: Annotated[int, typer.Option(help="Short side resized to SIZE, then a centre SIZE x SIZE crop.")] = 256,
    start: Annotated[int, typer.Option(help="First frame of each clip.")] = 0,
    windows: Annotated[int, typer.Option(help="Windows of --frames frames per clip, spread evenly from --start to "
                                              "the clip's end (1: only the one at --start).")] = 1,
    max_videos: Annotated[int | None, typer.Option(help="Use at most this many videos (in sorted order).")] = None,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass.")] = 1,
    predict_context: Annotated[
        int | None, typer.Option(help="Also evaluate prediction of the remaining frames from the first K (1 + 4a).")
    ] = None,
    padding: Annotated[
        Padding, typer.Option(help="Padding latents for prediction: the model's own (auto), learnable or gaussian.")
    ] = Padding.auto,
    stlpips: Annotated[
        bool, typer.Option("--stlpips/--no-stlpips", help="Compute ST-LPIPS (alex), the shift-tolerant LPIPS.")
    ] = True,
    lpips: Annotated[
        bool, typer.Option("--lpips/--no-lpips", help="Also compute LPIPS (AlexNet; needs torchvision's ImageNet "
                                                      "weights, which `setup-metrics` cannot fetch).")
    ] = False,
    fvd: Annotated[bool, typer.Option("--fvd/--no-fvd", help="Compute rFVD (Kinetics-400 I3D).")] = True,
    stlpips_weights: Annotated[
        Path | None, typer.Option("--stlpips-weights", help="Converted ST-LPIPS file (else $PVVAE_STLPIPS, else the "
                                                            "metrics cache filled by `pvvae setup-metrics`).")
    ] = None,
    i3d: Annotated[
        Path | None, typer.Option(help="Converted I3D file (else $PVVAE_I3D, else the metrics cache filled by "
                                       "`pvvae setup-metrics`).")
    ] = None,
    speed: Annotated[bool, typer.Option("--speed", help="Also run the inference speed protocol per model.")] = False,
    speed_frames: Annotated[int, typer.Option(help="Speed protocol: frames per clip.")] = 17,
    speed_batch: Annotated[int, typer.Option(help="Speed protocol: clips per step.")] = 4,
    speed_warmup: Annotated[int, typer.Option(help="Speed protocol: untimed warm-up steps.")] = 50,
    speed_steps: Annotated[int, typer.Option(help="Speed protocol: timed steps (their mean is reported).")] = 100,
    reference: Annotated[
        Path | None, typer.Option(help="With --generated: compare two sets of videos by FVD and KVD (no model).")
    ] = None,
    generated: Annotated[Path | None, typer.Option(help="Generated videos to compare with --reference.")] = None,
    kvd_subsets: Annotated[int, typer.Option(help="KVD: number of random subsets.")] = 100,
    kvd_subset_size: Annotated[int, typer.Option(help="KVD: subset size (capped at the set sizes).")] = 1000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every number and the protocol here.")] = None,
    per_video: Annotated[Path | None, typer.Option(help="Write per-video metrics to this CSV file.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for Gaussian padding.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.")] = "auto",
) -> None:
    """Evaluate reconstruction (and prediction) quality of models side by side, or FVD/KVD of two video sets.

    Reconstruction: PSNR, SSIM, ST-LPIPS (alex) and rFVD on the same clips with the paper's protocol (first 17 frames,
    short side resized and centre-cropped to --size); optionally future-frame prediction (--predict-context)
    and inference speed (--speed). Prints a markdown table, models side by side.

    With --reference DIR --generated DIR instead: FVD and KVD between two sets of videos on I3D features.

    A metric whose network weights are not available is reported as unavailable, with the reason and the fix
    (`pvvae setup-metrics` fetches ST-LPIPS and the I3D). FVD from few clips is biased: the clip count is printed
    with every FVD.
    """
    from pvvae_cli.eval.protocol import EvalProtocol
    from pvvae_cli.eval.reconstruction import evaluate as run_evaluation
    from pvvae_cli.eval.reconstruction import open_metrics
    from pvvae_cli.eval.report import column_names, write_json
    from pvvae_cli.eval.sets import compare_video_sets, sets_markdown
    from pvvae_cli.eval.speed import SpeedProtocol
    from pvvae_cli.metrics import MetricUnavailable, load_i3d
    from pvvae_cli.runtime.device import resolve_device, resolve_dtype

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ValueError as e:
        fail(str(e))

    if reference is not None or generated is not None:
        if reference is None or generated is None:
            fail("--reference and --generated go together: give both folders")
        if inputs or model:
            fail("--reference/--generated compare two video folders without a model; drop INPUT and --model")
        if per_video is not None:
            fail("--per-video applies to model evaluation, not to --reference/--generated")
        try:
            extractor = load_i3d(i3d, device=dev)
            result = compare_video_sets([reference], [generated], extractor, frames, size, start,
                                        batch_size=max(batch_size, 1), kvd_subsets=kvd_subsets,
                                        kvd_subset_size=kvd_subset_size, max_videos=max_videos, progress=_say)
        except (MetricUnavailable, FileNotFoundError, ValueError) as e:
            fail(str(e))
        typer.echo(sets_markdown(result))
        if json_out is not None:
            write_json(json_out, result)
            _say(f"wrote {json_out}")
        return

    if not inputs:
        fail("give one or more videos or folders (INPUT...), or --reference DIR --generated DIR")
    model = model or [model_or_default(None)]
    try:
        protocol = EvalProtocol(frames=frames, size=size, start=start, windows=windows,
                                predict_context=predict_context,
                                padding=padding.value, batch_size=batch_size, seed=seed)
        speed_protocol = SpeedProtocol(speed_frames, speed_batch, size, speed_warmup, speed_steps) if speed else None
        videos = protocol.find_videos(inputs, max_videos)
    except (FileNotFoundError, ValueError) as e:
        fail(_flags(str(e)))

    models = []
    for name, spec in zip(column_names(model), model, strict=True):
        try:
            vae = load_model(spec, device=str(dev)).to(dev).eval()
        except ValueError as e:
            fail(str(e))
        try:
            protocol.check_model(vae)
            if speed_protocol is not None:
                speed_protocol.check_model(vae)
        except ValueError as e:
            fail(f"{spec}: {_flags(str(e))}")
        models.append((name, spec, vae))

    nets = open_metrics(stlpips, lpips, fvd, dev, stlpips_weights, i3d)
    try:
        report = run_evaluation(models, videos, protocol, dt, nets.lpips, nets.features, speed_protocol,
                                progress=_say, stlpips=nets.stlpips)
    except ValueError as e:
        fail(str(e))
    typer.echo(report.to_markdown())
    if json_out is not None:
        report.write_json(json_out)
        _say(f"wrote {json_out}")
    if per_video is not None:
        report.write_csv(per_video)
        _say(f"wrote {per_video}")
