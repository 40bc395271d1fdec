"""A claim on one output path among processes, so runs sharing an output folder never write the same file at once.

Two ``pvvae encode`` (or ``decode``) runs into one folder, on one machine or on several sharing a file system, each
claim an output before they look at it and hold the claim until it is written. A claimed output is left to its
owner (reported as busy), which also makes N identical runs share the work of one folder.

The claim is a hidden ``.NAME.lock`` file beside the output, in one of two modes:

- ``flock`` (wherever the file system supports it): an exclusive ``flock`` on the lock file. The kernel drops it
  when its process dies (even by kill -9), so there are no stale claims to clean up. The lock file is removed on
  release; acquiring checks that the locked file is still the one on disk (a racing release may have unlinked it)
  and retries if not.
- ``file`` (where ``flock`` fails with ENOSYS, ENOLCK or EOPNOTSUPP: Lustre mounted without ``-o flock``, some
  NFS set-ups): the lock file itself is the claim. It is created with ``O_CREAT | O_EXCL`` (atomic on local file
  systems, NFSv3+ and Lustre: one claimant wins) and removed on release. A holder killed by kill -9 or a crash
  leaves it behind, so a lock file may be broken by whoever finds it, under one rule:

      the holder is provably dead (the same host, that is the same hostname, kernel boot and process namespace,
      and its pid no longer exists or now belongs to a process started at another time), or the holder is on
      another host and the lock file is older than ``STALE_AFTER_S`` (a day), or the lock file names no holder
      (empty or unreadable: a run of pvvae 0.10 or older left it) and is older than ``UNNAMED_STALE_AFTER_S``.

  A holder that is alive on this host is never broken, however old its claim. Breaking renames the lock file to a
  unique name, checks that it moved the very file it judged (else it puts the other claimant's file back) and
  deletes it; then the claimant tries ``O_EXCL`` again, so two breakers of one stale file still leave one holder.

Either way the lock file holds a one-line JSON record of its holder (``Holder``): host, pid, process start time,
claim time, mode, and ``options``, a digest of what the holder is writing (e.g. the encode options), so a run that
finds an output busy can tell whether the other run writes what it would (skip it) or something else (a failure).

Without ``fcntl`` (Windows) claims always succeed: runs into one folder are then not coordinated.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# flock's "not on this file system" (ENOTSUP is EOPNOTSUPP on Linux, not everywhere)
FLOCK_UNSUPPORTED = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP})
STALE_AFTER_S = 24 * 3600.0  # a `file` lock of a holder on another host is broken after this long
UNNAMED_STALE_AFTER_S = 300.0  # an empty or unreadable lock file (its writer writes the record at once)
_RECORD_WAIT_S = 0.1  # how long to wait for the record of a just-created lock file


def lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@functools.cache
def _this_host() -> tuple[str, str]:
    """(hostname, machine): machine is the kernel boot id and pid namespace where Linux tells them, so two holders
    with the same hostname and machine see the same pids."""
    parts = []
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return socket.gethostname(), "/".join(parts)


def _process_start(pid: int) -> str:
    """When ``pid`` started (Linux: clock ticks after boot, field 22 of /proc/PID/stat), "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()  # the command name (field 2) may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its lock file says."""

    host: str
    machine: str
    pid: int
    started: str  # the process's start time ("" unknown): tells a reused pid from the holder
    since: float  # time.time() of the claim
    mode: str  # "flock" or "file"
    options: str  # digest of what the holder writes ("" unknown)

    @classmethod
    def me(cls, mode: str, options: str) -> Holder:
        host, machine = _this_host()
        return cls(host, machine, os.getpid(), _process_start(os.getpid()), time.time(), mode, options)

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            d = json.loads(data)
            holder = cls(str(d["host"]), str(d["machine"]), int(d["pid"]), str(d["started"]), float(d["since"]),
                         str(d["mode"]), str(d["options"]))
        except (ValueError, TypeError, KeyError):
            return None
        return holder if holder.pid > 0 else None

    def encode(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    def alive(self) -> bool | None:
        """True or False when the holder is on this host (its pid can be checked), None when it is not."""
        if (self.host, self.machine) != _this_host():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists (another user's)
        now = _process_start(self.pid)
        return not (self.started and now and now != self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def is_stale(holder: Holder | None, mtime: float) -> bool:
    """Whether a ``file`` lock with this record (None: empty or unreadable) and modification time may be broken:
    the rule of the module docstring."""
    age = time.time() - mtime
    if holder is None:
        return age > UNNAMED_STALE_AFTER_S
    alive = holder.alive()
    return alive is False or (alive is None and age > STALE_AFTER_S)


def _read(fd: int) -> tuple[Holder | None, os.stat_result]:
    """The record of an open lock file; waits a moment for one that its creator has not written yet."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        st = os.fstat(fd)
        holder = Holder.parse(os.pread(fd, 4096, 0))
        if holder is not None or time.monotonic() > deadline or time.time() - st.st_mtime > 5:
            return holder, st
        time.sleep(0.01)


class OutputLock:
    """``try_acquire()`` claims ``path`` (False: another process holds it, described by ``holder`` where its lock
    file says); ``release()`` gives it back. ``options``: a digest of what this claimant writes, recorded for
    others to read."""

    def __init__(self, path: str | Path, options: str = "") -> None:
        self.path = Path(path)
        self.lock_file = lock_path(self.path)
        self.options = options
        self.holder: Holder | None = None
        self.mode: str | None = None
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.holder = None
        if fcntl is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd, created = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                try:
                    fd, created = os.open(self.lock_file, os.O_RDWR), False
                except FileNotFoundError:
                    continue  # released between the two opens
            try:
                claimed = self._claim(fd, created)
            except BaseException:
                os.close(fd)
                raise
            if claimed is None:
                os.close(fd)
                continue
            if not claimed:
                os.close(fd)
            return claimed

    def _claim(self, fd: int, created: bool) -> bool | None:
        """Claim with the open lock file ``fd``: True (``fd`` is now ours), False (busy) or None (try again)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = _read(fd)[0]
            return False
        except OSError as e:
            if e.errno not in FLOCK_UNSUPPORTED:
                raise
            return self._claim_file(fd, created)
        try:
            same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            return None  # the holder released (and unlinked) it between our open and flock
        if not created:
            holder, st = _read(fd)
            if holder is not None and holder.mode == "file" and not is_stale(holder, st.st_mtime):
                self.holder = holder  # claimed from a mount where flock does not work
                return False
        self._take(fd, "flock")
        return True

    def _claim_file(self, fd: int, created: bool) -> bool | None:
        if created:  # O_EXCL: ours
            self._take(fd, "file")
            return True
        holder, st = _read(fd)
        if not is_stale(holder, st.st_mtime):
            self.holder = holder
            return False
        self._break(st)
        return None

    def _take(self, fd: int, mode: str) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, Holder.me(mode, self.options).encode(), 0)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_file)
            raise
        self._fd, self.mode = fd, mode

    def _break(self, judged: os.stat_result) -> None:
        """Remove the stale lock file ``judged`` (and only that file)."""
        grave = self.lock_file.with_name(f"{self.lock_file.name}.{uuid.uuid4().hex[:8]}.broken")
        try:
            os.rename(self.lock_file, grave)
        except FileNotFoundError:
            return  # released or broken by someone else
        try:
            moved = os.stat(grave)
            if (moved.st_ino, moved.st_dev) != (judged.st_ino, judged.st_dev):
                with contextlib.suppress(FileExistsError):
                    os.link(grave, self.lock_file)  # another claimant's fresh lock file: put it back
        finally:
            with contextlib.suppress(OSError):
                os.unlink(grave)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.mode == "flock":
                os.unlink(self.lock_file)  # while still locked: nobody can be holding this inode's lock
            elif os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino:  # still ours (never broken while alive)
                os.unlink(self.lock_file)
        except OSError:
            pass
        finally:
            os.close(fd)
            self.mode = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
