"""Rows of the state table gathered for a round and scattered back (`Gathered`), and how a column's stored
values become the ones computed with: widened (float32 → float64, int32 → int64) and, for a symmetric
matrix stored as its upper triangle (`Symmetric`), unpacked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .npfast import clip, count_nonzero


@dataclass(frozen=True, eq=False)
class Symmetric:
    """A symmetric k × k matrix per row stored as its k (k + 1) / 2 upper-triangle values, row by row
    (3 × 3: 6 values of 9), computed with as `dtype` (its declared dtype)."""

    k: int
    dtype: np.dtype[Any]
    rows: np.ndarray  # the upper triangle's (i, j), row by row: packing
    cols: np.ndarray
    full: np.ndarray  # [k, k]: each entry's index among the packed values: unpacking (one take)

    @classmethod
    def of(cls, k: int, dtype: np.dtype[Any]) -> Symmetric:
        i, j = np.triu_indices(k)
        pos = np.empty((k, k), np.intp)
        pos[i, j] = pos[j, i] = np.arange(len(i))
        return cls(k, dtype, i.astype(np.intp), j.astype(np.intp), pos)

    @property
    def size(self) -> int:
        return len(self.rows)

    def pack(self, m: Any) -> np.ndarray:
        """[..., k, k] → [..., k (k + 1) / 2]: the upper triangle (the lower one is its mirror)."""
        out: np.ndarray = np.asarray(m)[..., self.rows, self.cols]
        return out

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """[..., k (k + 1) / 2] → [..., k, k], in the declared dtype."""
        out: np.ndarray = packed.take(self.full, axis=-1).astype(self.dtype, copy=False)
        return out


# How a stored column becomes the computed one: a dtype to widen to, or a Symmetric to unpack. A dtype
# instance, not a scalar type: astype() then skips converting the type to its dtype (~450 instructions a
# column, ~30 columns a round).
Convert = np.dtype[Any] | Symmetric


class Gathered(dict[str, np.ndarray]):
    """Some rows' columns (`StateTable.gather`), each gathered (a copy) when first looked up.

    A round reads and writes only some of the ~40 columns (a stream past its baseline never touches its
    warm-up sums): gathering and scattering back only those saves ~1 µs of fixed cost per column. What
    was looked up or assigned is scattered back by `scatter`; a column never touched is left as it is,
    and so is one only read through `peek`. `key in cols` asks the table; `get` and iteration see only
    the columns gathered so far, so scoring code looks columns up by `cols[key]`. A key assigned must
    be a table column (`scatter` writes it).
    """

    __slots__ = ("_columns", "_slots", "_widen", "_read")

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        slots: np.ndarray | slice,
        widen: Mapping[str, Convert] | None = None,
    ) -> None:
        """`slots`: the rows' slots, or the slice `as_rows` made of them. `widen`: the columns stored
        otherwise than computed (`Convert`)."""
        super().__init__()
        self._columns, self._widen = columns, widen or {}
        self._slots = slots if isinstance(slots, slice) else as_rows(slots)
        self._read: dict[str, np.ndarray] | None = None  # the columns peeked

    def __missing__(self, key: str) -> np.ndarray:
        rows = self._slots
        column = self._columns[key]
        conv = self._widen.get(key)  # stored float32 / int32 (or packed), computed in float64 / int64
        if conv is not None and conv is not _F64 and conv is not _I64:  # (`is`: a fraction of type()'s cost)
            sym: Symmetric = conv  # type: ignore[assignment]
            if isinstance(rows, slice):
                v = sym.unpack(column[rows])
            else:
                v = column[rows[:, None, None], sym.full].astype(sym.dtype)  # rows and entries in one index
        elif isinstance(rows, slice):
            # Consecutive rows: a view, then one copy (widened in the same call when stored narrower).
            v = column[rows].astype(conv) if conv is not None else column[rows].copy()
        else:
            # take(axis=0) copies like a[slots], at a third of its fixed cost for rows of more than one value.
            v = column.take(rows, axis=0)
            if conv is not None:
                v = v.astype(conv)
        self[key] = v
        return v

    def peek(self, key: str) -> np.ndarray:
        """`cols[key]` for a round that only reads the column: gathered once, and `scatter` does not write
        it back (a baseline's results, a frozen threshold: read by every later round, written by none)."""
        v = dict.get(self, key)
        if v is not None:
            return v
        read = self._read
        if read is None:
            read = self._read = {}
        v = read.get(key)
        if v is None:
            v = read[key] = self.__missing__(key)
            dict.__delitem__(self, key)  # gathered, not to be scattered
        return v

    def __contains__(self, key: object) -> bool:
        return key in self._columns  # whether the table has the column, gathered yet or not

    def scatter(self) -> None:
        """Write every column looked up or assigned back to the table's rows."""
        columns, slots, widen = self._columns, self._slots, self._widen
        for k, v in self.items():
            conv = widen.get(k)
            if conv is not None and conv is not _F64:
                if conv is _I64:
                    # Stored as int32: saturate, do not wrap around. np.clip's values from its own ufunc
                    # without its Python wrapper (npfast.clip; a few integer columns every round).
                    v = clip(v, _LO, _HI)
                else:
                    v = conv.pack(v)  # type: ignore[union-attr]
            columns[k][slots] = v


def read_only(cols: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """`cols[key]` of a round that does not write the column (`Gathered.peek`; any other mapping as is)."""
    return cols.peek(key) if type(cols) is Gathered else cols[key]


def as_rows(slots: np.ndarray) -> np.ndarray | slice:
    """`slots` as a slice when they are consecutive and ascending (one stream, or a round of the same
    streams in the order they were first seen): reading and writing a slice of rows costs ~0.4 µs less per
    column than a gather (take) and ~0.5 µs less than a scatter (fancy assignment) into float32 rows, for
    the ~40 columns a round touches. Otherwise the slots themselves."""
    n = len(slots)
    if n == 0:
        return slots
    first = int(slots[0])
    if n > 1 and int(slots[-1]) - first != n - 1:
        return slots
    if 1 < n <= 64:  # compared as Python ints: a third of the numpy test's cost at these sizes
        if slots.tolist() != list(range(first, first + n)):
            return slots
    elif n > 64 and count_nonzero(slots[1:] - slots[:-1] == 1) != n - 1:
        return slots
    return slice(first, first + n)


_INT32 = np.iinfo(np.int32)
_LO, _HI = np.array(_INT32.min, np.int64), np.array(_INT32.max, np.int64)  # 0-d: no scalar conversion per call
_F64, _I64 = np.dtype(np.float64), np.dtype(np.int64)  # the dtypes a narrowed column is widened to


def store(target: np.ndarray, where: int | np.ndarray, values: Any) -> None:
    """`target[where] = values`, saturated at int32's bounds if `target` is a narrowed int32 column (a
    plain assignment would wrap around)."""
    if target.dtype == np.int32:
        values = np.clip(np.asarray(values), _INT32.min, _INT32.max)
    target[where] = values
