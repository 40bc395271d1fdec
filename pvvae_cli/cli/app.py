"""The ``pvvae`` Typer app: registers one command per module of this package."""

from __future__ import annotations

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
app.add_typer(gen_app, name="gen")


def main() -> None:
    """The console entry point. Commands report the errors they expect with ``fail``; any other ``PvvaeError``
    (a user's mistake or a bad file, raised deeper in the library) still becomes one line and exit code 2, never a
    traceback. Other exceptions are bugs and keep theirs."""
    from pvvae_cli.errors import PvvaeError
    from pvvae_cli.runtime.progress import keep_stdout_for_results

    keep_stdout_for_results()  # stdout: results only, whatever native libraries print
    try:
        app()
    except PvvaeError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None
