"""Atomic file output: write to a temp file in the destination folder, then ``os.replace`` it into place.

An interrupted write (crash, Ctrl-C, full disk) leaves the destination untouched: either the old file, or
nothing, never half a file. The temp name starts with a dot and ends in ``.tmp`` so globs skip it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _umask() -> int:
    # Read once: os.umask can only be read by setting it, which is not thread-safe.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


class AtomicFile:
    """A temp path ``tmp`` beside ``path``: ``commit()`` moves it into place (permissions as a plain create
    would give), ``abort()`` removes it. ``suffix`` ends the temp name (some writers pick the format from it)."""

    def __init__(self, path: str | Path, suffix: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp" + suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds it becomes ``path``; when it raises, the temp
    file is removed and ``path`` is untouched."""
    f = AtomicFile(path, suffix)
    try:
        yield f.tmp
        f.commit()
    finally:
        f.abort()


def set_default_mode(path: str | Path, directory: bool = False) -> None:
    """Give a folder or file created by ``tempfile`` (0700/0600) the permissions a plain create would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
