"""Atomic file output: write to a temp file in the destination folder, then ``os.replace`` it into place.

An interrupted write (crash, Ctrl-C, full disk) leaves the destination untouched: either the old file, or
nothing, never half a file. The temp name is ``.NAME.XXXXXXXX.tmp`` (NAME: the destination's name): hidden, and
never ending in the destination's suffix, so neither ``*.mp4`` globs nor ``find -name '*.mp4'`` pick it up.
A process killed mid-write leaves its temp file behind; ``remove_stale_temps`` deletes those of one destination
(call it only while holding that destination's ``OutputLock``, when no other writer can be using them).
``StaleTemps`` does the same for the many outputs of one run, listing each folder once instead of once per output.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
import threading
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


_TEMP_NAME = re.compile(rf"\.(?P<name>.+)\.[a-z0-9_]{{8}}\{TEMP_SUFFIX}")


def _temp_owner(name: str) -> str | None:
    """The destination name whose ``temp_sibling`` ``name`` is (``.a.mp4.k9x2ab_c.tmp`` -> ``a.mp4``), or None."""
    m = _TEMP_NAME.fullmatch(name)
    return m["name"] if m else None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def remove_stale_temps(path: str | Path) -> int:
    """Delete the temp files and folders that interrupted writes of ``path`` left beside it; returns how many.
    Only exact ``temp_sibling`` names of ``path`` match (not those of ``path``'s name plus more). Lists the whole
    folder: for many outputs of one folder use ``StaleTemps``."""
    path = Path(path)
    try:
        names = [n for n in os.listdir(path.parent) if _temp_owner(n) == path.name]
    except OSError:
        return 0
    for name in names:
        _remove(path.parent / name)
    return len(names)


class StaleTemps:
    """``remove(path)`` = ``remove_stale_temps(path)`` for the many outputs of one run, with one listing per folder.

    The first ``remove`` in a folder lists it once and files its temp names by destination; each later ``remove``
    deletes only the names listed for its own destination (each at most once). That is as safe as listing at every
    claim: a temp file of ``path`` is created only by a writer that holds ``path``'s ``OutputLock``, so when the
    caller holds it (as it must), every listed temp file of ``path`` is either a dead writer's leftover or one a
    writer has since moved into place or removed (already gone, and its random name is not taken again while the
    caller holds the lock). What it does not see is a temp file left by a writer that died after the listing: the
    next run removes that one. Thread-safe (the encoder claims in a reader thread)."""

    def __init__(self) -> None:
        self._listed: dict[Path, dict[str, list[str]]] = {}
        self._mutex = threading.Lock()

    def remove(self, path: str | Path) -> int:
        path = Path(path)
        folder = path.parent
        with self._mutex:
            if folder not in self._listed:
                by_owner: dict[str, list[str]] = {}
                with contextlib.suppress(OSError):  # no folder yet: nothing stale in it
                    for name in os.listdir(folder):
                        owner = _temp_owner(name)
                        if owner is not None:
                            by_owner.setdefault(owner, []).append(name)
                self._listed[folder] = by_owner
            names = self._listed[folder].pop(path.name, [])
        for name in names:
            _remove(folder / name)
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
