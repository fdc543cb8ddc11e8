"""Spilled stream state: where evicted streams' rows go when `engine.evicted = "spill"`.

A stream evicted from the state table (LRU, when `max_streams` is reached) is written here, and when
it returns its row is read back instead of starting fresh. SQLite (stdlib) in the state directory.

Versions, not a single row per stream: a row is stored with its last event time, and a returning
reading at `ts` takes the newest version *older than ts*. That keeps journal replay after a crash
exact: replay sees the version that existed at that point of the original run, even though the
original run went on to spill newer versions. `compact()` (at each checkpoint) keeps only the newest
version per stream; `max_rows` bounds the disk (oldest versions dropped first, counted).
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..state import Column, StreamState, current_layout

_COUNTS = struct.Struct("<qq")  # steps, anomalies


class SqliteSpill:
    def __init__(
        self,
        path: Path,
        state_shapes: Sequence[tuple[int, ...]],
        n_predictions: int,
        *,
        columns: Mapping[str, Column],
        max_rows: int = 1_000_000,
        model_sha256: str = "",
    ) -> None:
        """`columns`: the state table's per-stream columns (`StateTable.column_specs`), stored with
        each row; rows stored with other columns (another version's scorer) are discarded at open."""
        self.path = path
        # Per-stream columns (state.Column), packed after the states in name order.
        self.columns = sorted((k, c.shape, np.dtype(c.dtype)) for k, c in columns.items())
        self.max_rows = max_rows
        self.shapes = [tuple(sh) for sh in state_shapes]
        self.n_predictions = n_predictions
        # Autocommit in WAL mode with synchronous=NORMAL: a commit survives a process crash without
        # an fsync per eviction (SD-card wear); the WAL is synced at SQLite's own checkpoints.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS spill (stream TEXT NOT NULL, last_ts REAL NOT NULL, "
            "row BLOB NOT NULL, PRIMARY KEY (stream, last_ts)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS by_ts ON spill (last_ts)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # Rows of another model (other state shapes, other meaning) are never restored.
        # So are rows packed with another set of columns (another edge-lstm version's scorer).
        layout = json.dumps([[k, list(shape), dt.str] for k, shape, dt in self.columns])
        found = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self.discarded = 0
        if found and (found.get("model_sha256") != model_sha256 or _current(found.get("layout", "[]")) != layout):
            self.discarded = self.db.execute("DELETE FROM spill").rowcount
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model_sha256', ?)", (model_sha256,))
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (layout,))
        self.rows = self.db.execute("SELECT COUNT(*) FROM spill").fetchone()[0]
        self.dropped = 0
        self.restored = 0

    def put(self, rows: Sequence[StreamState]) -> None:
        if not rows:
            return
        self.db.executemany(
            "INSERT OR REPLACE INTO spill VALUES (?, ?, ?)", [(r.stream, r.last_ts, self._pack(r)) for r in rows]
        )
        self.rows += len(rows)
        if self.rows > self.max_rows:
            excess = self.rows - self.max_rows
            self.db.execute(
                "DELETE FROM spill WHERE (stream, last_ts) IN "
                "(SELECT stream, last_ts FROM spill ORDER BY last_ts LIMIT ?)",
                (excess,),
            )
            self.rows -= excess
            self.dropped += excess

    def get(self, stream: str, before_ts: float) -> StreamState | None:
        hit = self.db.execute(
            "SELECT last_ts, row FROM spill WHERE stream = ? AND last_ts < ? ORDER BY last_ts DESC LIMIT 1",
            (stream, before_ts),
        ).fetchone()
        if hit is None:
            return None
        self.restored += 1
        return self._unpack(stream, hit[0], hit[1])

    def rebind(self, model_sha256: str) -> None:
        """A hot reload swapped in a model with the same state signature: its rows stay valid."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model_sha256', ?)", (model_sha256,))

    def forget(self, stream: str) -> bool:
        """Drop every version of a stream (a reset: it must not come back from here)."""
        gone = int(self.db.execute("DELETE FROM spill WHERE stream = ?", (stream,)).rowcount)
        self.rows -= gone
        return gone > 0

    def compact(self) -> None:
        """Keep only the newest version of each stream (call when a checkpoint covers the past)."""
        self.db.execute(
            "DELETE FROM spill WHERE last_ts < (SELECT MAX(s2.last_ts) FROM spill s2 WHERE s2.stream = spill.stream)"
        )
        self.rows = self.db.execute("SELECT COUNT(*) FROM spill").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def _unpack(self, stream: str, last_ts: float, blob: bytes) -> StreamState:
        steps, anomalies = _COUNTS.unpack_from(blob)
        pos = _COUNTS.size
        prediction = np.frombuffer(blob, np.float64, self.n_predictions, pos).copy()
        pos += 8 * self.n_predictions
        states = []
        for shape in self.shapes:
            n = int(np.prod(shape))
            states.append(np.frombuffer(blob, np.float32, n, pos).reshape(shape).copy())
            pos += 4 * n
        columns = {}
        for k, shape, dt in self.columns:
            n = int(np.prod(shape))
            columns[k] = np.frombuffer(blob, dt, n, pos).reshape(shape).copy()
            pos += dt.itemsize * n
        return StreamState(stream, states, float(last_ts), steps, anomalies, prediction, columns)

    def _pack(self, r: StreamState) -> bytes:
        parts = [_COUNTS.pack(r.steps, r.anomalies), np.asarray(r.prediction, np.float64).tobytes()]
        parts += [np.asarray(st, np.float32).tobytes() for st in r.states]
        parts += [np.asarray(r.columns[k], dt).tobytes() for k, _, dt in self.columns]
        return b"".join(parts)


def _current(layout: str) -> str:
    """A stored layout with renamed columns under their current names (state.current_layout): rows
    spilled by an older version still fit when only names changed."""
    try:
        entries = json.loads(layout)
        names = current_layout([str(e[0]) for e in entries])
    except (ValueError, TypeError, IndexError, KeyError):
        return layout  # not a layout this version wrote: it does not match, the rows are discarded
    return layout if names is None else json.dumps([[k, *e[1:]] for k, e in zip(names, entries)])
