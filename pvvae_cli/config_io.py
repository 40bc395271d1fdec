"""Serialisation shared by the frozen config dataclasses (model families, gen, training runs): a JSON-ready
``to_dict`` (tuples as lists), a strict ``from_dict`` (an unknown key is an error naming the known ones: a typo in a
``config.json`` or a run's config must not be dropped silently) and ``replace``."""

from __future__ import annotations

import dataclasses
from typing import Any

from pvvae_cli.errors import PvvaeError


class ConfigError(PvvaeError, ValueError):
    """An invalid run configuration (VAE training, gen, a recipe); the message names the key (or file) and the
    fix."""


def unknown_keys(cls: type, d: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(unknown, known)`` field names of the dataclass ``cls`` for the keys of ``d``, each sorted."""
    known = {f.name for f in dataclasses.fields(cls)}
    return sorted(set(d) - known), sorted(known)


def strict_from_dict(cls: type, d: dict[str, Any], source: str, error: type[Exception]):
    """``cls(**d)`` for a run config read from a file or flags: an unknown key or a bad value raises ``error``
    naming ``source`` (and the known keys)."""
    unknown, known = unknown_keys(cls, d)
    if unknown:
        raise error(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(known)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise error(f"{source}: {e}") from e


def check_latent_stats(config: Any) -> None:
    """Raise ``ValueError`` unless an autoencoder config's ``latents_mean``/``latents_std`` are both None or both
    ``latent_channels`` long, with every std > 0."""
    name, c = type(config).__name__, config.latent_channels
    mean, std = config.latents_mean, config.latents_std
    for key, value in (("latents_mean", mean), ("latents_std", std)):
        if value is not None and len(value) != c:
            raise ValueError(f"{name}.{key} must have latent_channels={c} entries, got {len(value)}")
    if std is not None and any(s <= 0 for s in std):
        raise ValueError(f"{name}.latents_std entries must be > 0")
    if (mean is None) != (std is None):
        raise ValueError(f"{name}.latents_mean and latents_std must be given together")


class FrozenConfig:
    """Mixin for ``@dataclass(frozen=True)`` configs; every field name is a permanent file key."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        unknown, known = unknown_keys(cls, d)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys are {known}")
        return cls(**d)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
