"""One BLAS thread while :meth:`IntegerModel.run` runs batches on its own threads.

``run`` computes independent batches on one thread per core. If NumPy's BLAS also starts a
thread per core for every matrix product, the threads outnumber the cores: products wait for
each other, and on a machine busy with other work a product can wait a whole scheduler time
slice (measured here: the same run 10x slower). So while batches run in parallel, BLAS is held
to one thread, then restored.

NumPy's wheels bundle OpenBLAS, whose thread count is process-wide (``openblas_set_num_threads``;
its ``_local`` variant is process-wide too). :func:`one_thread` finds the OpenBLAS that NumPy
loaded (never loading another library) through :mod:`ctypes`, sets one thread and restores the
previous count when the last concurrent ``run`` ends. With another BLAS (MKL, Accelerate) or
none found, it does nothing: results never depend on it, only speed.
"""

import contextlib
import ctypes
import glob
import os
import threading

import numpy as np

__all__ = ["one_thread", "controls"]

_LOCK = threading.Lock()
_STATE = {"depth": 0, "saved": None}
_FOUND = []        # [] not searched yet; [None] or [(get, set)] once searched

# (getter, setter) symbol names of OpenBLAS builds: SciPy's 64-bit-integer build bundled by
# NumPy 2 wheels, its 32-bit variant, then plain OpenBLAS.
_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _candidates():
    base = os.path.dirname(os.path.abspath(np.__file__))
    folders = (os.path.join(os.path.dirname(base), "numpy.libs"), os.path.join(base, ".dylibs"))
    for folder in folders:
        yield from sorted(glob.glob(os.path.join(folder, "*openblas*")))


def _search():
    # RTLD_NOLOAD: open the library only if it is already loaded (by NumPy), never load one.
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path, mode=mode)
        except OSError:
            continue
        for get_name, set_name in _SYMBOLS:
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


def controls():
    """``(get, set)`` of the BLAS thread count NumPy uses, or ``None`` if not found."""
    with _LOCK:
        if not _FOUND:
            try:
                _FOUND.append(_search())
            except (AttributeError, ValueError, TypeError):
                _FOUND.append(None)
        return _FOUND[0]


@contextlib.contextmanager
def one_thread():
    """Hold NumPy's BLAS to one thread inside the block (nested and concurrent uses allowed)."""
    found = controls()
    if found is None:
        yield
        return
    get, set_ = found
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["saved"] = get()
            set_(1)
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                set_(_STATE["saved"])
