"""The shipped default model: what ``--model`` means when a command is given none.

Its weights folder is the repository's ``weights/DEFAULT_MODEL`` (there for a clone and an editable install: the
quick start). ``$PVVAE_MODEL`` names another default (a weights folder or a hub repo id) for every command.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvvae_cli.models.weights import WEIGHTS_NAME, WeightsError

DEFAULT_MODEL = "pvvae-small"  # weights/<name>; its config.json's "release" holds the name and version
ENV_VAR = "PVVAE_MODEL"


def shipped_weights_dir() -> Path:
    """``weights/DEFAULT_MODEL`` beside the package (the repository's root for a clone or editable install)."""
    return Path(__file__).resolve().parents[2] / "weights" / DEFAULT_MODEL


def default_model() -> str:
    """``$PVVAE_MODEL`` if set, else the shipped weights folder; ``WeightsError`` (with the fix) if neither."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    folder = shipped_weights_dir()
    if (folder / WEIGHTS_NAME).is_file():
        return str(folder)
    raise WeightsError(f"no --model given, and the default model is not at {folder} (it ships in the repository's "
                       f"weights/; a package installed from a wheel does not carry it): pass --model WEIGHTS_FOLDER "
                       f"or owner/name, or set ${ENV_VAR}")
