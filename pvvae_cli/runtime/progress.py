"""Progress display and the stdout/stderr split that shell scripts rely on.

stdout carries a command's results only (a markdown table, a summary line a script parses); progress, warnings
and logs go to stderr. Progress bars are drawn only when stderr is a terminal: redirected to a log file or a pipe,
tqdm's cursor escapes would fill the log, so there is no bar and the commands' one-line messages remain.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress(total: int, desc: str, unit: str, quiet: bool = False, leave: bool = True, **kw) -> tqdm:
    """A tqdm bar on stderr, disabled when ``quiet`` or when stderr is not a terminal."""
    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, disable=disable, dynamic_ncols=True,
                file=sys.stderr, **kw)


def keep_stdout_for_results() -> None:
    """Point file descriptor 1 at stderr and give Python's ``sys.stdout`` a private copy of the real stdout.

    Native libraries (decord's and ffmpeg's C/C++ logging, a subprocess that inherits our stdout) write to fd 1
    directly, below Python; after this call their lines land on stderr, while ``typer.echo`` (through
    ``sys.stdout``) still writes the results to the real stdout. Call once, at the console entry point.
    """
    try:
        sys.stdout.flush()
        results = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # no real file descriptors (embedded, tests): nothing to split
        return
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout = os.fdopen(results, "w", buffering=1, encoding=encoding, errors="replace", closefd=True)
