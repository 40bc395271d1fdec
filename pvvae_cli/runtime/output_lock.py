"""A claim on one output path among processes, so runs sharing an output folder never write the same file at once.

Two ``pvvae encode`` (or ``decode``) runs into one folder, on one machine or on several sharing a file system, each
claim an output before they look at it and hold the claim until it is written. A claimed output is left to its
owner (reported as busy), which also makes N identical runs share the work of one folder. The claim is an
exclusive ``flock`` on a hidden ``.NAME.lock`` file beside the output: the kernel drops it when its process dies
(even by kill -9), so there are no stale claims to clean up. The lock file is removed on release; acquiring checks
that the locked file is still the one on disk (a racing release may have unlinked it) and retries if not.

Without ``fcntl`` (Windows) claims always succeed: runs into one folder are then not coordinated.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


class OutputLock:
    """``try_acquire()`` claims ``path`` (False: another process holds it); ``release()`` gives it back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if fcntl is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the holder released (and unlinked) it between our open and flock: try again

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_file)  # while still locked: nobody can be holding this inode's lock
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
