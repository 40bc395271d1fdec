"""A clean stop on Ctrl-C or SIGTERM: the loop finishes its step, saves a checkpoint and returns.

A batch scheduler sends SIGTERM before it kills a job; a user presses Ctrl-C. Either way the first signal only
sets a flag the loop checks at each step boundary, so no step is left half done; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class StopOnSignal:
    """Context manager: while inside, the first SIGINT/SIGTERM sets ``requested`` (and reports it with ``say``).

    Signal handlers can only be installed from the main thread; elsewhere (a training run in a worker thread)
    the handlers are left alone and ``requested`` stays False."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.requested = False
        self._say = say
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                  "(Ctrl-C again to abort)")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def worker_ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group, and a scheduler (Slurm) sends SIGTERM to
    every process of a job; the main process handles them (clean stop with a checkpoint) while the workers keep
    serving batches. Without this, a worker killed by SIGTERM made the main process fail instead of stopping. The
    workers still end with the run: the DataLoader shuts them down, and they exit when the main process dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
