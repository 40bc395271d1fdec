"""Splitting one batch job across N independent processes, GPUs or nodes: ``pvvae encode --shard I/N``.

Each input belongs to exactly one shard, decided by a hash of its path relative to its input root: every process
that lists the same inputs computes the same split without talking to the others, whatever the listing order,
and an input keeps its shard when files are added to the dataset (re-runs skip what is done). Shards are disjoint
and together cover every input. They balance by file count like a fair die: a shard of n expected files holds
n ± ~2√n (±5% at 2,000 files per shard, more for small datasets), and clip lengths are not weighed.

``--shard auto`` reads the process's place from the launcher's environment: torchrun (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), a Slurm job array (``SLURM_ARRAY_TASK_ID`` among ``SLURM_ARRAY_TASK_COUNT`` tasks from
``SLURM_ARRAY_TASK_MIN``) or Slurm tasks (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pvvae_cli.errors import PvvaeError
from pvvae_cli.media.discovery import Job


class ShardError(PvvaeError, ValueError):
    """An invalid ``--shard`` (or a launcher environment that gives no place); the message says the forms."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``. ``local_rank``: the process's index on its node, when the launcher
    says (torchrun, Slurm tasks), to pick its GPU."""

    index: int
    count: int
    local_rank: int | None = None

    def holds(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def select(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs of this shard (by each input's path relative to its root), in their order."""
        return [j for j in jobs if self.holds(j.rel.as_posix())]

    def manifest_path(self, path: Path) -> Path:
        """``m.jsonl`` -> ``m.shard-00003-of-00008.jsonl``: one manifest per shard (merge: concatenate them)."""
        return path.with_name(f"{path.stem}.shard-{self.index:05d}-of-{self.count:05d}{path.suffix}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


FORMS = "--shard I/N (0 <= I < N, e.g. 3/8) or --shard auto (torchrun or Slurm environment)"


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """``"I/N"`` or ``"auto"`` (from ``env``, default ``os.environ``). Raises ``ShardError``."""
    env = os.environ if env is None else env
    if text.strip().lower() == "auto":
        return _from_env(env)
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise ShardError(f"invalid --shard {text!r}: use {FORMS}") from None
    return _checked(index, count, None, f"--shard {text}")


def _checked(index: int, count: int, local_rank: int | None, what: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"{what}: shard index {index} of {count} is out of range; use {FORMS}")
    return Shard(index, count, local_rank)


def _from_env(env: Mapping[str, str]) -> Shard:
    def num(key: str) -> int | None:
        value = env.get(key)
        try:
            return int(value) if value not in (None, "") else None
        except ValueError:
            raise ShardError(f"--shard auto: {key}={value!r} is not an integer") from None

    if num("WORLD_SIZE") is not None and num("RANK") is not None:  # torchrun
        return _checked(num("RANK"), num("WORLD_SIZE"), num("LOCAL_RANK"), "--shard auto (torchrun RANK/WORLD_SIZE)")
    if num("SLURM_ARRAY_TASK_ID") is not None and num("SLURM_ARRAY_TASK_COUNT") is not None:
        first = num("SLURM_ARRAY_TASK_MIN") or 0
        return _checked(num("SLURM_ARRAY_TASK_ID") - first, num("SLURM_ARRAY_TASK_COUNT"), None,
                        "--shard auto (Slurm array)")
    if num("SLURM_PROCID") is not None and num("SLURM_NTASKS") is not None:
        return _checked(num("SLURM_PROCID"), num("SLURM_NTASKS"), num("SLURM_LOCALID"), "--shard auto (Slurm tasks)")
    raise ShardError("--shard auto: no RANK/WORLD_SIZE (torchrun) or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or "
                     "SLURM_PROCID/SLURM_NTASKS in the environment; give --shard I/N")
