"""Spilled stream state: where evicted streams' rows go when `engine.evicted = "spill"`.

A stream evicted from the state table (LRU, when `max_streams` is reached) is written here, and when
it returns its row is read back instead of starting fresh. SQLite (stdlib) in the state directory.

Versions, not a single row per stream: a row is stored with its last event time, and a returning
reading at `ts` takes the newest version *older than ts*. That keeps journal replay after a crash
exact: replay sees the version that existed at that point of the original run, even though the
original run went on to spill newer versions. `compact()` (at each checkpoint) drops the versions the
previous checkpoint generation no longer needs: each stream keeps its newest version as of the previous
checkpoint and every version after it, so replaying the journal from the previous generation (the
newest one damaged) is exact too. `max_rows` bounds the versions (oldest dropped first, counted) and
`max_bytes` the file: beyond it the least recently seen streams are dropped whole (`dropped_streams`).

A full disk never stops the daemon: a failed write loses the rows it carried (`lost`, reported through
`on_error`), a failed read restores nothing (the stream starts fresh).
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..state import Column, StreamState, current_layout
from .disk import FILE_MODE

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
        max_bytes: int = 1 << 30,
        model_sha256: str = "",
        on_error: Callable[[str, Exception], None] | None = None,
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
        # Created 0600 whatever the umask (SQLite gives its -wal and -shm files the database's mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        os.chmod(path, FILE_MODE)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS spill (stream TEXT NOT NULL, last_ts REAL NOT NULL, "
            "row BLOB NOT NULL, PRIMARY KEY (stream, last_ts)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS by_ts ON spill (last_ts)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # Per stream, the newest last_ts as of the previous checkpoint (compact).
        self.db.execute("CREATE TABLE IF NOT EXISTS mark (stream TEXT PRIMARY KEY, last_ts REAL) WITHOUT ROWID")
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
        self.max_bytes = max_bytes
        self.dropped_streams = 0  # least recently seen streams dropped whole at max_bytes
        self.lost = 0  # rows a failed write (a full disk) could not store
        self.failures = 0
        self.on_error = on_error

    def _failed(self, what: str, e: Exception) -> None:
        self.failures += 1
        if self.on_error is not None:
            self.on_error(what, e)

    def put(self, rows: Sequence[StreamState]) -> None:
        if not rows:
            return
        try:
            self._put(rows)
        except sqlite3.Error as e:
            self.lost += len(rows)
            self._failed("storing evicted streams", e)

    def used_bytes(self) -> int:
        """Bytes of the database file in use (pages not on SQLite's free list)."""
        q = self.db.execute
        pages = int(q("PRAGMA page_count").fetchone()[0]) - int(q("PRAGMA freelist_count").fetchone()[0])
        return pages * int(q("PRAGMA page_size").fetchone()[0])

    def _put(self, rows: Sequence[StreamState]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO spill VALUES (?, ?, ?)", [(r.stream, r.last_ts, self._pack(r)) for r in rows]
        )
        self.rows += len(rows)
        used = self.used_bytes()
        if used > self.max_bytes and self.rows:
            # Down to 90 % of the bound, so that the next puts do not each drop a few streams.
            excess_rows = int((used - 0.9 * self.max_bytes) / (used / self.rows)) + 1
            gone = self.db.execute(
                "DELETE FROM spill WHERE stream IN (SELECT stream FROM spill GROUP BY stream "
                "ORDER BY MAX(last_ts) LIMIT ?)",
                (excess_rows,),
            ).rowcount
            self.rows = self.db.execute("SELECT COUNT(*) FROM spill").fetchone()[0]
            self.dropped_streams += min(excess_rows, int(gone))
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
        try:
            hit = self.db.execute(
                "SELECT last_ts, row FROM spill WHERE stream = ? AND last_ts < ? ORDER BY last_ts DESC LIMIT 1",
                (stream, before_ts),
            ).fetchone()
        except sqlite3.Error as e:
            self._failed("reading a spilled stream", e)
            return None
        if hit is None:
            return None
        self.restored += 1
        return self._unpack(stream, hit[0], hit[1])

    def rebind(self, model_sha256: str) -> None:
        """A hot reload swapped in a model with the same state signature: its rows stay valid."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model_sha256', ?)", (model_sha256,))

    def forget(self, stream: str) -> bool:
        """Drop every version of a stream (a reset: it must not come back from here)."""
        try:
            gone = int(self.db.execute("DELETE FROM spill WHERE stream = ?", (stream,)).rowcount)
            self.db.execute("DELETE FROM mark WHERE stream = ?", (stream,))
        except sqlite3.Error as e:
            self._failed("forgetting a spilled stream", e)
            return False
        self.rows -= gone
        return gone > 0

    def compact(self) -> None:
        """Call after each checkpoint: drop the versions older than each stream's newest one as of the
        previous checkpoint (replay from the previous generation needs nothing older), then mark the
        newest versions now for the next call."""
        try:
            self.db.execute("BEGIN")
            self.db.execute(
                "DELETE FROM spill WHERE last_ts < (SELECT m.last_ts FROM mark m WHERE m.stream = spill.stream)"
            )
            self.db.execute("DELETE FROM mark")
            self.db.execute("INSERT INTO mark SELECT stream, MAX(last_ts) FROM spill GROUP BY stream")
            self.db.execute("COMMIT")
            self.rows = self.db.execute("SELECT COUNT(*) FROM spill").fetchone()[0]
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._failed("compacting", e)

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
