"""The run folder and its checkpoints: what a training run writes, and how a resumed run finds where it stood.

Run folder: ``train_config.json`` (the run's config), ``metrics.jsonl`` (one JSON object per line, ``kind`` =
``train`` / ``val`` / ``final``), ``samples/``, ``checkpoints/step_XXXXXXX.pt`` (complete: resume continues
exactly) and ``weights/`` (the exported model). A checkpoint is a dict of tensors and plain values (loaded with
``weights_only=True``: nothing is unpickled) holding ``format``, ``step`` and whatever the trainer saved.

Nothing here knows which model is trained: any trainer's config dict and state dict fit (VAE and gen runs both
use it, through ``engine.run``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pvvae_cli.errors import PvvaeError
from pvvae_cli.runtime.atomic import atomic_path

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
WEIGHTS_DIR = "weights"
CKPT_FORMAT = 1  # bump when a checkpoint's layout changes, with an upgrade path for the old one


class TrainError(PvvaeError, RuntimeError):
    """A run that cannot start or continue; the message names the file or setting and the fix."""


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(out_dir) / CKPT_DIR).glob("step_*.pt"))


def check_run_folder(out_dir: Path, resume: bool) -> list[Path]:
    """Before anything is written: a new run needs a folder without a run, a resumed one a checkpoint.

    Returns the checkpoints to resume from (none for a new run)."""
    if not resume:
        if (out_dir / CONFIG_FILE).exists():
            raise TrainError(f"{out_dir}: already holds a run; continue it with --resume {out_dir} or pick another "
                             "--out")
        return []
    checkpoints = list_checkpoints(out_dir)
    if not checkpoints:
        raise TrainError(f"{out_dir}: no checkpoint to resume from (expected {CKPT_DIR}/step_*.pt)")
    return checkpoints


def read_run_config(run_dir: Path) -> dict:
    """The saved ``train_config.json`` of a run folder, as a dict."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainError(f"{path}: missing; --resume needs a run folder written by pvvae train")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainError(f"{path}: not valid JSON ({e})") from e


def check_resumable(saved: dict, now: dict, may_change: Sequence[str], where: Path) -> None:
    """A resumed run computes what the saved one did: only the keys in ``may_change`` may differ. A key the saved
    config lacks (written by an older pvvae) took its default when the run was read back, so it is not compared."""
    changed = sorted(k for k in now if k not in may_change and k in saved and saved[k] != now[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise TrainError(f"{where}: cannot resume with a different configuration ({diffs}); only "
                         f"{', '.join(may_change)} may change")


def prepare_run_folder(out_dir: Path, config: dict, resumed_at: int | None = None) -> None:
    """Create the folder layout and (re)write the config (a resumed run may have extended ``steps``); on resume,
    cut the metrics log back to the checkpoint's step. Main process only."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    if resumed_at is not None:
        truncate_metrics(out_dir / METRICS_FILE, resumed_at)


def save_checkpoint(out_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` (atomically: a kill leaves the previous ones intact), then
    delete all but the newest ``keep``."""
    path = Path(out_dir) / CKPT_DIR / f"step_{step:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": CKPT_FORMAT, "step": step, **state}, tmp)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(checkpoints: Sequence[Path], warn: Callable[[str], None]) -> dict:
    """The newest checkpoint that loads (an older one if the newest is damaged)."""
    for path in reversed(checkpoints):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: fall back to an older one
            warn(f"cannot load checkpoint {path} ({type(e).__name__}: {e}); trying an older one")
            continue
        if ckpt.get("format") != CKPT_FORMAT:
            raise TrainError(f"{path}: checkpoint format {ckpt.get('format')!r} is not supported "
                             f"(this pvvae writes {CKPT_FORMAT})")
        return ckpt
    raise TrainError(f"no loadable checkpoint among {[str(p) for p in checkpoints]}")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a kill leaves some), so the log reads as
    one uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if (rec.get("kind") == "train" and rec["step"] < step) or (rec.get("kind") == "val" and rec["step"] <= step):
            keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(keep) + "\n" if keep else "")

