"""Per-channel statistics of a set of latent files: ``pvvae stats``, the ``latents_mean``/``latents_std`` that
normalise a VAE's latents for diffusion training.

Streaming and mergeable: each file is read once and folded into per-channel ``(count, mean, M2)`` accumulators in
float64 (M2: the sum of squared deviations from the mean), with the pairwise update of Chan, Golub and LeVeque, which
stays accurate where sums of x and x² cancel. Two accumulators merge the same way, so the statistics of shards
(``--shard I/N``) combine into those of the whole set, up to float64 rounding.

The statistics are always of the **raw** latents (the encoder's output): a file stored normalised
(``normalized = true``, ``(z - latents_mean) / latents_std`` with the statistics of the model that wrote it) is
de-normalised first with that model's statistics, because a weights folder's ``latents_mean``/``latents_std`` are
raw-space statistics (``models.latent_space.normalize_latents``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvvae_cli.codec.latents import LatentMeta, config_hash, load_latent
from pvvae_cli.errors import PvvaeError
from pvvae_cli.models.protocol import AutoencoderConfig
from pvvae_cli.runtime.atomic import atomic_path

STATS_FORMAT = "pvvae-latent-stats"
STATS_FORMAT_VERSION = 1
# A channel whose std is below this gets latents_std 1 in a weights folder, so normalising never divides by ~0.
MIN_STD = 1e-8


class LatentStatsError(PvvaeError, ValueError):
    """Latents or statistics files that cannot be combined; the message names the odd file and why."""


def _zeros(channels: int) -> torch.Tensor:
    return torch.zeros(channels, dtype=torch.float64)


@dataclass
class ChannelStats:
    """Running per-channel statistics of raw latents: ``count`` values per channel, float64 ``mean`` and ``m2``
    ``(C,)``, over ``files`` files made by one VAE (``model``, ``config_hash``; ``""`` while empty), of which
    ``normalized_files`` were stored normalised (and de-normalised here). ``channels`` is 0 while empty."""

    channels: int = 0
    count: int = 0
    mean: torch.Tensor = field(default_factory=lambda: _zeros(0))
    m2: torch.Tensor = field(default_factory=lambda: _zeros(0))
    files: int = 0
    model: str = ""
    config_hash: str = ""
    model_tag: str = ""
    normalized_files: int = 0

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation, float64 ``(C,)``."""
        return (self.m2 / max(self.count, 1)).sqrt()

    def update(self, z: torch.Tensor) -> None:
        """Fold in one raw latent ``(C, t, h, w)`` (any float dtype; accumulated in float64)."""
        if z.ndim != 4:
            raise ValueError(f"latent must be (C, t, h, w), got shape {tuple(z.shape)}")
        x = z.detach().to("cpu", torch.float64).reshape(z.shape[0], -1)  # (C, t*h*w)
        n = x.shape[1]
        if n == 0:
            return
        mean = x.mean(1)
        m2 = (x - mean[:, None]).square_().sum(1)
        if self.channels == 0 and self.count == 0:
            self.channels, self.mean, self.m2 = x.shape[0], _zeros(x.shape[0]), _zeros(x.shape[0])
        if x.shape[0] != self.channels:
            raise ValueError(f"latent has {x.shape[0]} channels, the statistics {self.channels}")
        self.count, self.mean, self.m2 = _combine(self.count, self.mean, self.m2, n, mean, m2)

    def merge(self, other: ChannelStats) -> ChannelStats:
        """The statistics of both sets (a new object). Raises ``LatentStatsError`` when they are of different VAEs."""
        if other.files == 0 and other.count == 0:
            return self.copy()
        if self.files == 0 and self.count == 0:
            return other.copy()
        if (self.config_hash, self.channels) != (other.config_hash, other.channels):
            raise LatentStatsError(f"statistics of different VAEs: {other.model} (config hash {other.config_hash}, "
                                   f"{other.channels} channels) vs {self.model} (config hash {self.config_hash}, "
                                   f"{self.channels} channels)")
        count, mean, m2 = _combine(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
        return ChannelStats(self.channels, count, mean, m2, self.files + other.files, self.model, self.config_hash,
                            self.model_tag, self.normalized_files + other.normalized_files)

    def copy(self) -> ChannelStats:
        return ChannelStats(self.channels, self.count, self.mean.clone(), self.m2.clone(), self.files, self.model,
                            self.config_hash, self.model_tag, self.normalized_files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``mean``/``m2``/``std`` as lists of floats (Python's repr round-trips float64 exactly)."""
        return {"format": STATS_FORMAT, "format_version": STATS_FORMAT_VERSION, "space": "raw",
                "model": self.model, "config_hash": self.config_hash, "model_tag": self.model_tag,
                "channels": self.channels, "files": self.files, "normalized_files": self.normalized_files,
                "count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "<stats>") -> ChannelStats:
        if not isinstance(d, dict) or d.get("format") != STATS_FORMAT:
            found = d.get("format") if isinstance(d, dict) else None
            raise LatentStatsError(f"{where}: not a pvvae stats file (format {found!r}, expected {STATS_FORMAT!r}); "
                                   "write one with pvvae stats -o")
        if d.get("format_version") != STATS_FORMAT_VERSION:
            raise LatentStatsError(f"{where}: stats format_version {d.get('format_version')!r} is not supported "
                                   f"(this pvvae reads {STATS_FORMAT_VERSION})")
        try:
            channels, count = int(d["channels"]), int(d["count"])
            mean = torch.tensor([float(v) for v in d["mean"]], dtype=torch.float64)
            m2 = torch.tensor([float(v) for v in d["m2"]], dtype=torch.float64)
            stats = cls(channels, count, mean, m2, int(d["files"]), str(d["model"]), str(d["config_hash"]),
                        str(d.get("model_tag", "")), int(d.get("normalized_files", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise LatentStatsError(f"{where}: invalid stats file ({type(e).__name__}: {e})") from None
        if mean.shape != (channels,) or m2.shape != (channels,) or count < 0:
            raise LatentStatsError(f"{where}: invalid stats file (mean/m2 must have {channels} values, count >= 0)")
        return stats


def _combine(na: int, ma: torch.Tensor, m2a: torch.Tensor, nb: int, mb: torch.Tensor,
             m2b: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Chan et al.'s pairwise merge of two ``(count, mean, M2)`` accumulators."""
    if na == 0:
        return nb, mb.clone(), m2b.clone()
    if nb == 0:
        return na, ma.clone(), m2a.clone()
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta.square() * (na * nb / n)


def compute_stats(files: Iterable[str | Path],
                  config_for: Callable[[LatentMeta], AutoencoderConfig] | None = None) -> ChannelStats:
    """Statistics of the raw latents of ``files``, read one at a time. Every file must be of the first file's VAE
    (config hash and channel count), else ``LatentStatsError`` names the first odd file. ``config_for``: the config
    of the VAE that wrote a normalised file (asked once, on the first such file), whose ``latents_mean``/``std``
    undo the normalisation; its config hash must be the latents'."""
    stats = ChannelStats()
    first: tuple[Path, LatentMeta] | None = None
    undo: tuple[torch.Tensor, torch.Tensor] | None = None
    for path in files:
        path = Path(path)
        z, meta = load_latent(path)
        if first is None:
            first = (path, meta)
            stats.model, stats.config_hash, stats.model_tag = meta.model, meta.config_hash, meta.model_tag
        elif (meta.config_hash, meta.latent_channels) != (first[1].config_hash, first[1].latent_channels):
            raise LatentStatsError(
                f"{path}: made by {meta.model} (config hash {meta.config_hash}, {meta.latent_channels} channels), "
                f"not by {first[1].model} (config hash {first[1].config_hash}) like {first[0]}; compute the "
                "statistics of one VAE's latents at a time")
        z = z.to(torch.float64)
        if meta.normalized:
            if undo is None:
                undo = _denormalizer(path, meta, config_for)
            z = z * undo[1].view(-1, 1, 1, 1) + undo[0].view(-1, 1, 1, 1)
            stats.normalized_files += 1
        stats.update(z)
        stats.files += 1
    return stats


def _denormalizer(path: Path, meta: LatentMeta,
                  config_for: Callable[[LatentMeta], AutoencoderConfig] | None) -> tuple[torch.Tensor, torch.Tensor]:
    if config_for is None:
        raise LatentStatsError(f"{path}: stored normalised; its model's latents_mean/std are needed to undo that")
    config = config_for(meta)
    if config_hash(config) != meta.config_hash:
        raise LatentStatsError(f"{path}: stored normalised by {meta.model} (config hash {meta.config_hash}), but the "
                               f"model given has config hash {config_hash(config)}: its statistics cannot undo it")
    if config.latents_mean is None or config.latents_std is None:
        raise LatentStatsError(f"{path}: stored normalised, but {meta.model} has no latents_mean/std")
    return (torch.tensor(config.latents_mean, dtype=torch.float64),
            torch.tensor(config.latents_std, dtype=torch.float64))


def read_stats(path: str | Path) -> ChannelStats:
    """A stats file written by ``write_stats``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise LatentStatsError(f"{path}: no such stats file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LatentStatsError(f"{path}: not valid JSON ({e})") from None
    return ChannelStats.from_dict(raw, str(path))


def write_stats(stats: ChannelStats, path: str | Path) -> Path:
    """Write ``stats`` as JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(stats.to_dict(), indent=2) + "\n")
    return path


def write_to_weights(stats: ChannelStats, folder: str | Path) -> tuple[list[float], list[float]]:
    """Set ``latents_mean``/``latents_std`` in the weights folder's ``config.json`` (atomically; other keys kept)
    and return them. A channel with std below ``MIN_STD`` gets std 1.

    The folder must be the VAE that made the latents: its config hash, as it is *before* this change, must be the
    latents' (``codec.latents.config_hash`` hashes the whole config, ``latents_mean``/``latents_std`` included, so
    it is the hash the folder had when it encoded them). Writing new statistics therefore gives the folder a new
    config hash: latents encoded with it before no longer match it (``pvvae decode`` refuses them without
    ``--force``, and normalised ones would be de-normalised wrongly), and a second ``write_to_weights`` into the
    same folder is refused. Write into a copy of the weights folder to keep the original usable with old latents."""
    from pvvae_cli.models.weights import CONFIG_NAME, read_config

    path = Path(folder) / CONFIG_NAME
    if stats.count == 0:
        raise LatentStatsError("no latent values: nothing to write")
    config = read_config(path)
    if config_hash(config) != stats.config_hash:
        raise LatentStatsError(
            f"{folder}: config hash {config_hash(config)} is not the latents' ({stats.config_hash}, made by "
            f"{stats.model}); statistics of another model's latents would be wrong (a folder whose statistics were "
            "already replaced has a new hash: write into a copy of the original folder)")
    if config.latent_channels != stats.channels:
        raise LatentStatsError(f"{folder}: {config.latent_channels} latent channels, the statistics {stats.channels}")
    mean = stats.mean.tolist()
    std = [s if math.isfinite(s) and s >= MIN_STD else 1.0 for s in stats.std.tolist()]
    raw = json.loads(path.read_text())
    raw["latents_mean"], raw["latents_std"] = mean, std
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        read_config(tmp)  # validate before it replaces the original
    return mean, std
