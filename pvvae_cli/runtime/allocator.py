"""CPU allocator tuning for inference: keep freed memory in the process instead of returning it to the OS.

glibc's malloc serves large blocks (above a dynamic threshold of at most 32 MiB) with ``mmap`` and returns them
with ``munmap`` on free. Video activations are such blocks, and every op allocates a new one, so each op
first page-faults its whole output into existence: on the build machine an fp32 elementwise op on a
(1, 128, 6, 128, 128) tensor takes 13-26 ms that way and 2-5 ms with the memory kept (measured; PyTorch's
CPU performance guide recommends jemalloc/tcmalloc for the same reason). ``keep_freed_memory`` raises the
mmap and trim thresholds so freed blocks are reused. Peak memory is unchanged in kind (the process keeps
what it once used); it is a process-wide setting, so the CLI commands and benchmarks call it, the library
never does on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks up to ``threshold`` bytes for reuse. Returns False where not applicable
    (not Linux/glibc); calling it again is a no-op."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _done = ok
    return ok
