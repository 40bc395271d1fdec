"""Reading a foreign pickle of NumPy arrays without running arbitrary code.

A pickle can name any importable callable and call it while loading, so unpickling a file we did not write is
code execution. ``load_numpy_pickle`` admits exactly the three globals a pickle of plain NumPy arrays needs
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) and refuses every other global and
every persistent id; the result must then be nested dicts (str keys) of numeric arrays, nothing else.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

try:  # NumPy 2 moved the module; pickles written by NumPy 1 still name numpy.core.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickle(ValueError):
    """The pickle asks for something other than NumPy array reconstruction."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"refused global {module}.{name}: only NumPy array reconstruction is admitted") from None

    def persistent_load(self, pid):
        raise UnsafePickle(f"refused persistent id {pid!r}")


def _check_tree(node, where: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise UnsafePickle(f"non-string key {k!r} at {where or '/'}")
            _check_tree(v, f"{where}/{k}")
    elif isinstance(node, np.ndarray):
        if node.dtype.kind not in "fiub":
            raise UnsafePickle(f"array of dtype {node.dtype} at {where}: only numeric arrays are admitted")
    else:
        raise UnsafePickle(f"{type(node).__name__} at {where}: only dicts of arrays are admitted")


def load_numpy_pickle(data: bytes) -> dict:
    """Nested ``dict`` of NumPy arrays from pickle bytes; raises ``UnsafePickle`` for anything else."""
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    _check_tree(tree)
    return tree
