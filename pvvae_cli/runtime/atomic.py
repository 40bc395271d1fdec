"""Atomic file output: write to a temp file in the destination folder, then ``os.replace`` it into place.

An interrupted write (crash, Ctrl-C, full disk) leaves the destination untouched: either the old file, or
nothing, never half a file. The temp name is ``.NAME.XXXXXXXX.tmp`` (NAME: the destination's name): hidden, and
never ending in the destination's suffix, so neither ``*.mp4`` globs nor ``find -name '*.mp4'`` pick it up.
A process killed mid-write leaves its temp file behind; ``remove_stale_temps`` deletes those of one destination
(call it only while holding that destination's ``OutputLock``, when no other writer can be using them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def _umask() -> int:
    # Read once: os.umask can only be read by setting it, which is not thread-safe.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


TEMP_SUFFIX = ".tmp"


def temp_sibling(path: Path, directory: bool = False) -> Path:
    """Create (empty) and return a new temp file, or folder, named ``.NAME.XXXXXXXX.tmp`` beside ``path``."""
    kw = dict(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    if directory:
        return Path(tempfile.mkdtemp(**kw))
    fd, tmp = tempfile.mkstemp(**kw)
    os.close(fd)
    return Path(tmp)


def remove_stale_temps(path: str | Path) -> int:
    """Delete the temp files and folders that interrupted writes of ``path`` left beside it; returns how many.
    Only exact ``temp_sibling`` names of ``path`` match (not those of ``path``'s name plus more)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\{TEMP_SUFFIX}")
    try:
        names = [n for n in os.listdir(path.parent) if pattern.fullmatch(n)]
    except OSError:
        return 0
    for name in names:
        p = path.parent / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    return len(names)


class AtomicFile:
    """A temp path ``tmp`` beside ``path``: ``commit()`` moves it into place (permissions as a plain create
    would give), ``abort()`` removes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_sibling(self.path)

    def commit(self) -> None:
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds it becomes ``path``; when it raises, the temp
    file is removed and ``path`` is untouched."""
    f = AtomicFile(path)
    try:
        yield f.tmp
        f.commit()
    finally:
        f.abort()


def set_default_mode(path: str | Path, directory: bool = False) -> None:
    """Give a folder or file created by ``tempfile`` (0700/0600) the permissions a plain create would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
