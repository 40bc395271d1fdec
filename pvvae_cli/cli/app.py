"""The ``pvvae`` Typer app: registers one command per module of this package."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Annotated

import typer

from pvvae_cli import __version__
from pvvae_cli.cli.decode import decode
from pvvae_cli.cli.download import download
from pvvae_cli.cli.encode import encode
from pvvae_cli.cli.eval import evaluate
from pvvae_cli.cli.gen import gen_app
from pvvae_cli.cli.help_format import hide_flag_types
from pvvae_cli.cli.info import info
from pvvae_cli.cli.predict import predict
from pvvae_cli.cli.setup_metrics import setup_metrics
from pvvae_cli.cli.stats import stats
from pvvae_cli.cli.train import finetune_decoder, train

hide_flag_types()
app = typer.Typer(
    name="pvvae",
    help="Predictive Video VAE toolkit: video clips <-> safetensors latents, training and evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pvvae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Predictive Video VAE toolkit."""


app.command("info")(info)
app.command("encode")(encode)
app.command("decode")(decode)
app.command("predict")(predict)
app.command("eval")(evaluate)
app.command("train")(train)
app.command("finetune-decoder")(finetune_decoder)
app.command("download")(download)
app.command("setup-metrics")(setup_metrics)
app.command("stats")(stats)
app.add_typer(gen_app, name="gen")


def main() -> None:
    """The console entry point. Commands report the errors they expect with ``fail``; any other ``PvvaeError``
    (a user's mistake or a bad file, raised deeper in the library) still becomes one line and exit code 2, never a
    traceback. Other exceptions are bugs and keep theirs.

    Under torchrun a rank that fails ends its process at once (``os._exit``), so that torchrun stops the other ranks
    (waiting for it in a collective) and the job fails instead of hanging: a normal interpreter exit after an
    exception can wait forever (see ``_end_failed_rank``)."""
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.runtime.progress import keep_stdout_for_results

    keep_stdout_for_results()  # stdout: results only, whatever native libraries print
    try:
        try:
            app()
        except PvvaeError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise SystemExit(2) from None
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code != 0 and _under_torchrun():
            if not isinstance(e.code, int):  # sys.exit("message"): Python would print it
                print(e.code, file=sys.stderr)
            _end_failed_rank(code)
        raise
    except BaseException:
        if not _under_torchrun():
            raise
        traceback.print_exc()
        _end_failed_rank(1)


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _end_failed_rank(code: int) -> None:
    """Exit now with ``code``, skipping interpreter shutdown. That shutdown SIGTERMs the DataLoader workers and
    joins them, but they ignore SIGTERM (``engine.stop.worker_ignore_stop_signals``) and the traceback keeps their
    loader alive, so the join never returns (seen with ``--workers 2``; gloo's threads can also hold a process).
    Orphaned workers exit by themselves within seconds (they watch their parent)."""
    rank = os.environ.get("RANK", "?")
    print(f"error: rank {rank} of {os.environ.get('WORLD_SIZE')} failed (exit code {code}); ending this process so "
          "that torchrun stops the others", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
