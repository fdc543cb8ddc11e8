"""numpy's C functions without their Python wrappers, for the engine's per-round hot path (issue 24).

`np.count_nonzero(a)` is a Python function (dispatch for `__array_function__`, then the axis test) around
the C function that counts: ~3,500 instructions a call where the C function alone costs ~1,300
(valgrind, numpy 2.4), and a round calls it ~35 times. The same function, the same result; numpy's own
wrapper where the C function is not found (another numpy layout).

`clip(x, lo, hi)`: np.clip's own ufunc (np.clip is a Python wrapper of ~26,000 instructions around it, and
np.minimum(np.maximum(x, lo), hi) two ufunc calls of ~13,000 with Python ints as bounds): ~4,500. Integers
only here (for floats np.clip's NaN handling would be the question): the same values either way.

`f64(x)`: a constant as a 0-d float64 array. A Python float (or an np.float64) operand costs a ufunc call
~1,600 instructions more than an array (numpy converts the scalar anew each call, NEP 50's weak scalars),
a 0-d array nothing; with float64 (or integer, or boolean) arrays the result is the same float64 values.
Only where the other operand is never float32 (there a Python float keeps float32, a 0-d float64 array
would not).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np


def _c_count_nonzero() -> Callable[[Any], int]:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy >= 2, then 1.x
        try:
            found = getattr(__import__(module, fromlist=["count_nonzero"]), "count_nonzero", None)
        except ImportError:
            continue
        if callable(found) and type(found) is not type(_c_count_nonzero):  # a C function, not a wrapper
            c_function: Callable[[Any], int] = found
            return c_function
    return np.count_nonzero


count_nonzero: Callable[[Any], int] = _c_count_nonzero()


def _two_ufuncs(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.minimum(np.maximum(x, lo), hi)
    return out


def _clip_ufunc() -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    for module in ("numpy._core.umath", "numpy.core.umath"):
        try:
            found = getattr(__import__(module, fromlist=["clip"]), "clip", None)
        except ImportError:
            continue
        if isinstance(found, np.ufunc):
            ufunc: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = found
            return ufunc
    return _two_ufuncs


clip = _clip_ufunc()


def f64(x: float) -> np.ndarray:
    """`x` as a read-only 0-d float64 array: a cheaper ufunc operand than the Python float (see above)."""
    out = np.array(x, np.float64)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=256)
def i64(x: int) -> np.ndarray:
    """`x` as a read-only 0-d int64 array (as f64, for integer operands: int64 arrays give the same values),
    made once per value (an integer setting passed in per call: a cache look-up, not an array)."""
    out = np.array(x, np.int64)
    out.flags.writeable = False
    return out
