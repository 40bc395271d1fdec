"""What a run reports: ``metrics.jsonl`` records, progress messages and warnings, with the right process speaking.

Under torchrun every process runs the loop; only the main one writes the log and says how it goes, while a
warning (a skipped file) is printed by the process that met it, tagged with its rank.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from pvvae_cli.runtime.distributed import DistInfo


class RunLog:
    """``write`` appends one JSON record per line to ``path`` (main process); ``say`` prints progress (main
    process, unless ``quiet``); ``warn`` prints on every process. Messages go to ``log`` if given, else to stderr
    above the progress bar."""

    def __init__(self, path: Path, dist: DistInfo, quiet: bool = False, log: Callable[[str], None] | None = None):
        self.path, self.dist, self.quiet, self.log = Path(path), dist, quiet, log

    def write(self, record: dict) -> None:
        if self.dist.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def say(self, msg: str) -> None:
        if self.dist.is_main and not self.quiet:
            self._print(msg)

    def warn(self, msg: str) -> None:
        self._print((f"warning (rank {self.dist.rank}): " if self.dist.enabled else "warning: ") + msg)

    def _print(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)
        else:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)


def open_run(out_dir: Path, device: str, precision: str, quiet: bool = False,
             log: Callable[[str], None] | None = None):
    """The process side of a run (VAE or gen): join torchrun's process group if there is one, pick the device and
    compute dtype, and open the run log. Returns ``(dist_info, device, dtype, run_log)``; a bad device or
    precision is a ``TrainError``."""
    from pvvae_cli.engine import checkpoints as ckpts
    from pvvae_cli.runtime import distributed as dist
    from pvvae_cli.runtime.device import resolve_device, resolve_training_dtype

    try:
        dist_info, dev = dist.init_distributed(resolve_device(device))
        dtype = resolve_training_dtype(precision, dev)
    except ValueError as e:
        raise ckpts.TrainError(str(e)) from e
    run_log = RunLog(Path(out_dir) / ckpts.METRICS_FILE, dist_info, quiet, log)
    return dist_info, dev, dtype, run_log


def precision_note(precision: str, device, dtype) -> str | None:
    """What ``--precision auto`` chose, and on the CPU why (said once when the loop starts); None otherwise."""
    import torch

    from pvvae_cli.runtime.device import cpu_bf16_speedup, cpu_bf16_supported

    if precision != "auto":
        return None
    if device.type != "cpu":
        why = ""
    elif not cpu_bf16_supported():
        why = " (this CPU has no bf16 convolutions)"
    else:
        why = f" (bf16 measured at {cpu_bf16_speedup(torch.get_num_threads()):.2f}x the fp32 speed on this CPU)"
    return f"precision auto: {'bf16' if dtype == torch.bfloat16 else 'fp32'}{why}"
