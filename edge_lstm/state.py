"""The state table: one preallocated slot per stream, for every state tensor and per-stream statistics.

The arrays are allocated for `max_streams` rows at once, zeroed lazily by the kernel: a row costs memory
once a stream uses it (no growth, no copies, no freed arrays fragmenting the heap). float64 columns
are stored as float32 and computed in float64 (gathered as float64, rounded on scatter: scores stay
within 1e-4 of an all-float64 table, bench/precision.py); int64 columns are stored as int32, saturated
at its bounds on scatter (counters of 2**31 readings). Columns declared `exact` (counts, sums that grow
without bound, event times, bit fields, values compared for equality) are stored as declared. The
id -> slot index is a plain dict; recency is a per-slot counter, and when the table is full the least
recently seen streams are evicted (one partial sort per batch). Evicted rows are handed back so the
caller can spill them.

Besides the model's recurrent state, the table holds named per-stream *columns* declared by the scorer
and the alarm (running statistics, thresholds, hysteresis state): `Column(shape, dtype, init)`. They are
gathered and scattered with the rest of the row, checkpointed, spilled and restored with it.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gather import Convert, Gathered, Symmetric, as_rows, read_only, store

__all__ = ["Column", "Gathered", "StateTable", "StreamState", "Symmetric", "as_rows", "read_only", "store"]

# Column prefixes a release renamed (old → new): rows checkpointed or spilled by an older version restore
# under the new names (issue 23 named the deviation channel's columns `deviation.*`, formerly `dev.*`).
RENAMED_PREFIXES = {"dev.": "deviation."}


def current_name(name: str) -> str:
    """A column's name in this version (a renamed column's new name)."""
    for old, new in RENAMED_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def current_columns(columns: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """A stored row's columns under this version's names."""
    if not any(k.startswith(old) for k in columns for old in RENAMED_PREFIXES):
        return columns
    return {current_name(k): v for k, v in columns.items()}


def current_layout(names: list[str]) -> list[str] | None:
    """Stored column names (packed in name order, durable/spill.py) under this version's names; None if
    the renaming changed their order (the packed rows then do not fit)."""
    new = [current_name(k) for k in names]
    return new if new == sorted(new) else None


@dataclass(frozen=True)
class Column:
    """A per-stream column of the table: each stream's value has `shape`, and a new stream gets `init`."""

    shape: tuple[int, ...]
    dtype: type[np.generic]
    init: float | np.ndarray = 0.0
    # Stored as declared, never narrowed (to float32 / int32): counts and sums that grow without bound
    # (float32 stops counting at 2**24), event times, bit fields, values compared for equality.
    exact: bool = False
    # A symmetric (k, k) matrix: stored as its k (k + 1) / 2 upper-triangle values (3 × 3: 6 of 9) in the
    # compact storage (FLOAT32_STORAGE); gathered, handed out and checkpointed whole.
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.symmetric and (len(self.shape) != 2 or self.shape[0] != self.shape[1]):
            raise ValueError(f"a symmetric column is a square matrix, not of shape {self.shape}")


@dataclass(frozen=True)
class StreamState:
    """One stream's row of the table, detached (used for eviction spills and checkpoints)."""

    stream: str
    states: list[np.ndarray]
    last_ts: float
    steps: int
    anomalies: int
    prediction: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # missing names start from their init


_UNUSED = np.iinfo(np.int64).max  # `seen` of a free slot: never the least recently seen


# Store float64 columns as float32 and int64 ones as int32 unless `exact`, and symmetric matrices as their
# upper triangle (bench/precision.py measures what it changes; False: all as declared, its reference run).
FLOAT32_STORAGE = True

_NARROW: dict[type[np.generic], type[np.generic]] = {np.float64: np.float32, np.int64: np.int32}


def _storage(spec: Column) -> type[np.generic]:
    """The dtype a column is stored in: float64 as float32, int64 as int32, unless declared `exact`."""
    if not FLOAT32_STORAGE or spec.exact:
        return spec.dtype
    return _NARROW.get(spec.dtype, spec.dtype)


def _layout(spec: Column) -> tuple[tuple[int, ...], Convert | None]:
    """A column's stored shape per row, and how its stored values become the computed ones (None: as
    they are)."""
    dtype = _storage(spec)
    if spec.symmetric and FLOAT32_STORAGE:
        sym = Symmetric.of(spec.shape[0], np.dtype(spec.dtype))
        return (sym.size,), sym
    return spec.shape, (np.dtype(spec.dtype) if dtype != spec.dtype else None)


def _zeros(shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
    """A zeroed array whose pages cost memory only once written: an anonymous mapping of its own.
    (`np.zeros` gets that only above glibc's mmap threshold, which moves: below it the array comes from
    the heap, where memory reused is zeroed, and so resident, at once.)"""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count * dt.itemsize < mmap.PAGESIZE * 4:
        return np.zeros(shape, dt)
    # MAP_PRIVATE: copy-on-write across a fork (a forked checkpoint writer needs the snapshot; Python's
    # default for an anonymous mmap is MAP_SHARED, which the child would see the worker write into).
    pages = mmap.mmap(-1, count * dt.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dt, count).reshape(shape)


class StateTable:
    def __init__(
        self,
        state_shapes: Sequence[tuple[int, ...]],
        n_predictions: int,
        *,
        max_streams: int = 10_000,
        columns: Mapping[str, Column] | None = None,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        n = self.capacity = self.max_streams = max_streams
        self.state_shapes = [tuple(s) for s in state_shapes]
        self.n_predictions = n_predictions
        self.index: dict[str, int] = {}  # stream -> slot
        self._names: list[str | None] = [None] * n  # slot -> stream
        self.seen = np.full(n, _UNUSED, np.int64)  # when each slot's stream was last acquired (a counter)
        self._tick = 0
        self._fresh = 0  # slots from here on were never used
        self._free: list[int] = []  # used slots given back (evict), handed out again first
        # _zeros: the kernel's zero pages, so untouched rows cost no memory.
        self.states: list[np.ndarray] = [_zeros((n, *s), np.float32) for s in self.state_shapes]
        self.last_ts = _zeros((n,), np.float64)
        self.steps = _zeros((n,), np.int64)
        self.anomalies = _zeros((n,), np.int64)
        # The model's output: float32 anyway.
        self.prediction = _zeros((n, n_predictions), np.float32 if FLOAT32_STORAGE else np.float64)
        self.column_specs: dict[str, Column] = dict(columns or {})
        layouts = {k: _layout(c) for k, c in self.column_specs.items()}
        self.columns: dict[str, np.ndarray] = {
            k: _zeros((n, *layouts[k][0]), _storage(c)) for k, c in self.column_specs.items()
        }
        # The columns stored otherwise than computed: widened on gather, and unpacked if Symmetric.
        self._widen: dict[str, Convert] = {k: conv for k, (_, conv) in layouts.items() if conv is not None}
        # Each column's init as stored (a symmetric one's packed).
        self.stored_init = {k: self.to_stored(k, c.init) for k, c in self.column_specs.items()}

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, stream: str) -> bool:
        return stream in self.index

    @property
    def slots(self) -> dict[str, int]:
        """stream -> slot, least recently seen first (checkpoints keep this order). Built on each call:
        look a stream up in `index`."""
        used = self._lru()
        names = self._names
        return {names[i]: i for i in used.tolist()}

    def _lru(self) -> np.ndarray:
        """The used slots, least recently seen first."""
        used = np.flatnonzero(self.seen != _UNUSED)
        return used[np.argsort(self.seen[used], kind="stable")]

    def nbytes(self) -> int:
        """Bytes of the rows in use (the arrays are allocated for `max_streams`, touched as used)."""
        arrays = [*self.states, self.last_ts, self.steps, self.anomalies, self.prediction, *self.columns.values()]
        return sum(a.nbytes for a in arrays) * self._fresh // self.capacity

    def to_stored(self, key: str, values: Any) -> Any:
        """A column's values as declared ([..., *shape]) in its stored layout (a symmetric one packed)."""
        conv = self._widen.get(key)
        if type(conv) is not Symmetric:
            return values
        v = np.asarray(values)
        return conv.pack(v if v.ndim >= 2 else np.broadcast_to(v, (conv.k, conv.k)))

    def packed(self, key: str) -> Symmetric | None:
        """How a symmetric column is packed (None: stored whole)."""
        conv = self._widen.get(key)
        return conv if type(conv) is Symmetric else None

    def from_stored(self, key: str, values: np.ndarray) -> np.ndarray:
        """A column's stored values ([..., *stored shape]) as declared: dtype, and shape (unpacked)."""
        conv = self._widen.get(key)
        if type(conv) is Symmetric:
            return conv.unpack(values)
        return values.astype(self.column_specs[key].dtype, copy=False)

    def gather(self, slots: np.ndarray | slice) -> Gathered:
        """The columns of the rows at `slots` (distinct), gathered lazily: `Gathered.scatter` writes them
        back."""
        return Gathered(self.columns, slots, self._widen)

    def _reset(self, slots: np.ndarray) -> None:
        for a in self.states:
            a[slots] = 0.0
        self.last_ts[slots] = -np.inf
        self.steps[slots] = 0
        self.anomalies[slots] = 0
        self.prediction[slots] = 0.0
        for k, a in self.columns.items():
            a[slots] = self.stored_init[k]

    def acquire(self, stream: str) -> tuple[int, StreamState | None]:
        """The stream's slot, marked most recently seen (a fresh zeroed slot for a new stream), and
        the row of the stream evicted to make room, if one was."""
        slots, rows, _, _ = self.acquire_many([stream])
        return int(slots[0]), (rows[0] if rows else None)

    def acquire_many(
        self, streams: Sequence[str], *, keep_evicted: bool = True
    ) -> tuple[np.ndarray, list[StreamState], int, list[int]]:
        """`acquire` for a batch of distinct streams, with the per-stream numpy work done once.

        Returns the slots (in order), the rows evicted to make room (if `keep_evicted`), how many
        streams were evicted, and the positions in `streams` of streams that got a fresh slot. Streams
        of the batch are never evicted for it; evicted rows are copied out and new slots zeroed in one
        vectorised operation each: evicting is the common case under a flood of new stream ids.
        """
        get = self.index.get
        out = [get(stream, -1) for stream in streams]
        fresh = [pos for pos, slot in enumerate(out) if slot < 0]
        tick = self._tick
        self._tick += len(streams)
        known = [pos for pos, slot in enumerate(out) if slot >= 0]
        if known:
            self.seen[[out[p] for p in known]] = np.asarray(known, np.int64) + tick
        victims = self._victims(len(fresh) - len(self._free) - (self.capacity - self._fresh), tick)
        rows = self._detach(victims) if victims and keep_evicted else []
        for _, slot in reversed(victims):  # the least recently seen's slot is handed out first
            self._release(slot)
        new: list[int] = []
        for pos in fresh:
            slot = self._free.pop() if self._free else self._take_fresh()
            self.index[streams[pos]] = out[pos] = slot
            self._names[slot] = streams[pos]
            self.seen[slot] = tick + pos
            new.append(slot)
        if new:
            self._reset(np.asarray(new, np.intp))
        return np.asarray(out, np.intp), rows, len(victims), fresh

    def _take_fresh(self) -> int:
        self._fresh += 1
        return self._fresh - 1

    def _victims(self, needed: int, tick: int) -> list[tuple[str, int]]:
        """The `needed` least recently seen streams not of the current batch (acquired before `tick`)."""
        if needed <= 0:
            return []
        older = np.flatnonzero(self.seen < tick)
        if len(older) < needed:
            raise RuntimeError("state table full of streams of the current batch")
        if len(older) > needed:
            older = older[np.argpartition(self.seen[older], needed - 1)[:needed]]
        older = older[np.argsort(self.seen[older], kind="stable")]
        names = self._names
        return [(names[i], i) for i in older.tolist()]  # type: ignore[misc]

    def _release(self, slot: int) -> None:
        del self.index[self._names[slot]]  # type: ignore[arg-type]
        self._names[slot] = None
        self.seen[slot] = _UNUSED
        self._free.append(slot)

    def _detach(self, victims: list[tuple[str, int]]) -> list[StreamState]:
        """The victims' rows, copied out (in the columns' declared dtypes)."""
        v = np.asarray([slot for _, slot in victims], np.intp)
        states = [a[v] for a in self.states]
        last_ts, steps = self.last_ts[v].tolist(), self.steps[v].tolist()
        anomalies, prediction = self.anomalies[v].tolist(), self.prediction[v].astype(np.float64)
        cols = {k: self.from_stored(k, a[v]) for k, a in self.columns.items()}
        return [
            StreamState(
                name,
                [a[i] for a in states],
                last_ts[i],
                steps[i],
                anomalies[i],
                prediction[i],
                {k: c[i] for k, c in cols.items()},
            )
            for i, (name, _) in enumerate(victims)
        ]

    def evict(self, stream: str) -> StreamState:
        slot = self.index[stream]
        row = self.row(stream, slot)
        self._release(slot)
        return row

    def row(self, stream: str, slot: int | None = None) -> StreamState:
        slot = self.index[stream] if slot is None else slot
        return StreamState(
            stream=stream,
            states=[a[slot].copy() for a in self.states],
            last_ts=self.last_ts.item(slot),
            steps=self.steps.item(slot),
            anomalies=self.anomalies.item(slot),
            prediction=self.prediction[slot].astype(np.float64),
            columns={k: self.from_stored(k, a[slot]).copy() for k, a in self.columns.items()},
        )

    def put_row(self, slot: int, row: StreamState) -> None:
        for a, st in zip(self.states, row.states):
            a[slot] = st
        self.last_ts[slot] = row.last_ts
        self.steps[slot] = row.steps
        self.anomalies[slot] = row.anomalies
        self.prediction[slot] = row.prediction
        stored = current_columns(row.columns)
        specs = self.column_specs
        for k, a in self.columns.items():
            v = stored.get(k)
            # A row from before a column existed (an older checkpoint or spill) keeps the fresh value.
            fresh = v is None or np.shape(v) != specs[k].shape
            store(a, slot, self.stored_init[k] if fresh else self.to_stored(k, v))

    def restore(self, row: StreamState) -> StreamState | None:
        """Put a detached row back (from a checkpoint or a spill).

        Returns the row of the stream evicted to make room (None if none was), so that restoring
        into a full table never loses a stream's state silently.
        """
        slot, evicted = self.acquire(row.stream)
        self.put_row(slot, row)
        return evicted

    def idle_streams(self, last_seen_before: float) -> list[str]:
        """Streams whose last processed event time is older than the given time (LRU order)."""
        used = self._lru()
        names = self._names
        return [names[i] for i in used[self.last_ts[used] < last_seen_before].tolist()]
