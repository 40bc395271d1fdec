"""The ``pvvae`` command line: a thin Typer layer over the library (one file per command)."""
