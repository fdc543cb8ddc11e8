"""The state table: one preallocated slot per stream, for every state tensor and per-stream statistics.

Arrays grow by doubling up to `max_streams`. When full, the least recently seen stream is evicted
(LRU, O(1) via an ordered dict). Evicted rows are handed back so the caller can spill them.

Besides the model's recurrent state, the table holds named per-stream *columns* declared by the scorer
and the alarm (running statistics, thresholds, hysteresis state): `Column(shape, dtype, init)`. They are
gathered and scattered with the rest of the row, checkpointed, spilled and restored with it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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


class Gathered(dict[str, np.ndarray]):
    """Some rows' columns (`StateTable.gather`), each gathered (a copy) when first looked up.

    A round reads and writes only some of the ~40 columns (a stream past its baseline never touches its
    warm-up sums): gathering and scattering back only those saves ~1 µs of fixed cost per column. What
    was looked up or assigned is scattered back by `scatter`; a column never touched is left as it is.
    `key in cols` asks the table; `get` and iteration see only the columns gathered so far, so scoring
    code looks columns up by `cols[key]`. A key assigned must be a table column (`scatter` writes it).
    """

    __slots__ = ("_columns", "_slots")

    def __init__(self, columns: dict[str, np.ndarray], slots: np.ndarray) -> None:
        super().__init__()
        self._columns, self._slots = columns, slots

    def __missing__(self, key: str) -> np.ndarray:
        # take(axis=0) copies like a[slots], at a third of its fixed cost for rows of more than one value.
        v = self[key] = self._columns[key].take(self._slots, axis=0)
        return v

    def __contains__(self, key: object) -> bool:
        return key in self._columns  # whether the table has the column, gathered yet or not

    def scatter(self) -> None:
        """Write every column looked up or assigned back to the table's rows."""
        columns, slots = self._columns, self._slots
        for k, v in self.items():
            columns[k][slots] = v


class StateTable:
    def __init__(
        self,
        state_shapes: Sequence[tuple[int, ...]],
        n_predictions: int,
        *,
        max_streams: int = 10_000,
        initial_capacity: int = 64,
        columns: Mapping[str, Column] | None = None,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        self.state_shapes = [tuple(s) for s in state_shapes]
        self.n_predictions = n_predictions
        self.max_streams = max_streams
        self.capacity = 0
        self.slots: OrderedDict[str, int] = OrderedDict()  # LRU order: least recently seen first
        self._free: list[int] = []
        self.states: list[np.ndarray] = [np.zeros((0, *s), np.float32) for s in self.state_shapes]
        self.last_ts = np.zeros(0, np.float64)
        self.steps = np.zeros(0, np.int64)
        self.anomalies = np.zeros(0, np.int64)
        self.prediction = np.zeros((0, n_predictions), np.float64)
        self.column_specs: dict[str, Column] = dict(columns or {})
        self.columns: dict[str, np.ndarray] = {
            k: np.zeros((0, *c.shape), c.dtype) for k, c in self.column_specs.items()
        }
        self._grow(min(initial_capacity, max_streams))

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, stream: str) -> bool:
        return stream in self.slots

    def nbytes(self) -> int:
        arrays = [*self.states, self.last_ts, self.steps, self.anomalies, self.prediction, *self.columns.values()]
        return sum(a.nbytes for a in arrays)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        if capacity <= old:
            return

        def grown(a: np.ndarray) -> np.ndarray:
            b = np.zeros((capacity, *a.shape[1:]), a.dtype)
            b[:old] = a
            return b

        self.states = [grown(a) for a in self.states]
        self.last_ts, self.steps = grown(self.last_ts), grown(self.steps)
        self.anomalies, self.prediction = grown(self.anomalies), grown(self.prediction)
        self.columns = {k: grown(a) for k, a in self.columns.items()}
        self._free.extend(range(capacity - 1, old - 1, -1))  # pop() hands out low slots first
        self.capacity = capacity

    def gather(self, slots: np.ndarray) -> Gathered:
        """The columns of the rows at `slots` (distinct), gathered lazily: `Gathered.scatter` writes them
        back. Valid until the table grows."""
        return Gathered(self.columns, slots)

    def _reset(self, slots: np.ndarray) -> None:
        for a in self.states:
            a[slots] = 0.0
        self.last_ts[slots] = -np.inf
        self.steps[slots] = 0
        self.anomalies[slots] = 0
        self.prediction[slots] = 0.0
        for k, a in self.columns.items():
            a[slots] = self.column_specs[k].init

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
        streams were evicted, and the positions in `streams` of streams that got a fresh slot. Evicted
        rows are copied out and new slots zeroed in one vectorised operation each: evicting is the
        common case under a flood of new stream ids.
        """
        get, slots, free = self.slots.get, self.slots, self._free
        out: list[int] = []
        new: list[int] = []
        fresh: list[int] = []
        victims: list[tuple[str, int]] = []
        placed = 0  # streams of this batch sit at the MRU end of `slots` and are never victims
        for pos, stream in enumerate(streams):
            slot = get(stream)
            if slot is not None:
                slots.move_to_end(stream)
                out.append(slot)
                placed += 1
                continue
            if not free:
                if self.capacity < self.max_streams:
                    self._grow(min(self.capacity * 2, self.max_streams))
                elif len(slots) > placed:
                    victim = next(iter(slots))  # least recently seen, and not of this batch
                    free.append(slots.pop(victim))
                    victims.append((victim, free[-1]))
                else:
                    raise RuntimeError("state table full of streams of the current batch")
            slot = free.pop()
            slots[stream] = slot
            out.append(slot)
            new.append(slot)
            fresh.append(pos)
            placed += 1
        rows: list[StreamState] = []
        if victims and keep_evicted:
            v = np.asarray([slot for _, slot in victims], np.intp)
            states = [a[v] for a in self.states]
            last_ts, steps = self.last_ts[v].tolist(), self.steps[v].tolist()
            anomalies, prediction = self.anomalies[v].tolist(), self.prediction[v]
            cols = {k: a[v] for k, a in self.columns.items()}
            rows = [
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
        if new:
            self._reset(np.asarray(new, np.intp))
        return np.asarray(out, np.intp), rows, len(victims), fresh

    def evict(self, stream: str) -> StreamState:
        slot = self.slots.pop(stream)
        row = self.row(stream, slot)
        self._free.append(slot)
        return row

    def row(self, stream: str, slot: int | None = None) -> StreamState:
        slot = self.slots[stream] if slot is None else slot
        return StreamState(
            stream=stream,
            states=[a[slot].copy() for a in self.states],
            last_ts=self.last_ts.item(slot),
            steps=self.steps.item(slot),
            anomalies=self.anomalies.item(slot),
            prediction=self.prediction[slot].copy(),
            columns={k: a[slot].copy() for k, a in self.columns.items()},
        )

    def put_row(self, slot: int, row: StreamState) -> None:
        for a, st in zip(self.states, row.states):
            a[slot] = st
        self.last_ts[slot] = row.last_ts
        self.steps[slot] = row.steps
        self.anomalies[slot] = row.anomalies
        self.prediction[slot] = row.prediction
        stored = current_columns(row.columns)
        for k, a in self.columns.items():
            v = stored.get(k)
            # A row from before a column existed (an older checkpoint or spill) keeps the fresh value.
            a[slot] = self.column_specs[k].init if v is None or np.shape(v) != a.shape[1:] else v

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
        return [s for s, slot in self.slots.items() if self.last_ts[slot] < last_seen_before]
