"""CSV of readings → one float array per stream, with errors that name the column and the line.

Layout: a header row (`,`, `;` or tab separated, as `edge-lstm replay` reads; a UTF-8 byte order mark is
skipped); optional timestamp column (`ts`, `timestamp` or `datetime`, the columns `edge-lstm replay`
reads, parsed by the daemon's own rule `reading.parse_ts`; a `time` column is never a feature either);
optional `stream` column splitting the file into several series; an `anomaly` column is a label (as
`edge-lstm evaluate` reads it), never a feature; every other column is a feature (or only the
`features` asked for, in that order).

Two ways to treat a cell that is not a finite number (`missing`):
- "error" (calibration data of an exported model): a clear error naming the line and the column;
- "drop" (`fit`: any series a user has): the row is left out, as the daemon rejects a reading with a
  missing or non-finite value, and so are rows the daemon would reject for their timestamp (unreadable,
  or not newer than the stream's previous row). Without `features`, a column with no number at all is
  not a feature. `CsvData.notes` says what was left out.
Rows are taken in file order per stream: the model steps once per reading, whatever the time between.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edge_lstm.cli.rows import TS_COLUMNS
from edge_lstm.reading import TimestampError, parse_ts

from .errors import DataError

TIME_COLUMNS = (*TS_COLUMNS, "time")
LABEL_COLUMN = "anomaly"
STREAM_COLUMN = "stream"
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none", "-", "?"})

Missing = Literal["error", "drop"]


@dataclass(frozen=True)
class CsvData:
    features: list[str]
    streams: dict[str, np.ndarray]  # stream name → [steps, features], file order
    # Median seconds between consecutive readings of a stream, from the timestamp column; None without one.
    sample_interval_s: float | None = None
    notes: list[str] = field(default_factory=list)  # what was left out, and why (missing="drop")

    @property
    def arrays(self) -> list[np.ndarray]:
        return list(self.streams.values())


def read_csv(path: str | Path, features: Sequence[str] | None = None, *, missing: Missing = "error") -> CsvData:
    path = Path(path)
    rows = _rows(path)
    header = [c.strip() for c in rows[0]]
    lower = [c.lower() for c in header]
    stream_col = lower.index(STREAM_COLUMN) if STREAM_COLUMN in lower else None
    ts_col = next((lower.index(c) for c in TS_COLUMNS if c in lower), None)
    skip = {i for i, c in enumerate(lower) if c in TIME_COLUMNS or c in (STREAM_COLUMN, LABEL_COLUMN)}
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if row and any(c.strip() for c in row)]
    for line, row in body:
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields for {len(header)} columns")
    if not body:
        raise DataError(f"{path}: no data rows")
    notes: list[str] = []
    if features is None:
        features = _numeric_columns(path, header, body, skip, missing, notes)
    absent = [f for f in features if f not in header]
    if absent:
        raise DataError(f"{path}: missing column(s) {absent}; header is {header}")
    cols = [header.index(f) for f in features]
    values = _values(path, body, features, cols, missing)
    keys = [row[stream_col].strip() if stream_col is not None else "0" for _, row in body]
    ts = _timestamps(body, ts_col, header, notes)
    keep = np.ones(len(body), bool)
    if missing == "drop":
        keep = _usable(values, ts, keys, features, notes)
    streams: dict[str, list[int]] = {}
    for r in np.flatnonzero(keep).tolist():
        streams.setdefault(keys[r], []).append(r)
    if not streams:
        raise DataError(f"{path}: no usable data rows ({'; '.join(notes)})")
    return CsvData(
        list(features),
        {k: values[idx] for k, idx in streams.items()},
        _interval([ts[idx] for idx in streams.values()]) if ts is not None else None,
        notes,
    )


def _numeric_columns(
    path: Path, header: list[str], body: list[tuple[int, list[str]]], skip: set[int], missing: Missing, notes: list[str]
) -> list[str]:
    """The feature columns when none are named: every column but the time, stream and label ones; with
    missing="drop" also not those without a single number (noted)."""
    features = [c for i, c in enumerate(header) if i not in skip]
    if missing == "drop":
        text = [c for c in features if not any(_number(row[header.index(c)]) is not None for _, row in body)]
        if text:
            notes.append(f"column(s) {text} hold no numbers: not features")
        features = [c for c in features if c not in text]
    if not features:
        raise DataError(f"{path}: no numeric feature column in header {header}")
    return features


def _values(
    path: Path, body: list[tuple[int, list[str]]], features: Sequence[str], cols: list[int], missing: Missing
) -> np.ndarray:
    """[rows, features] of the cells' numbers; a cell without one is NaN with missing="drop", else an error
    naming its line and column."""
    values = np.full((len(body), len(cols)), np.nan)
    for r, (line, row) in enumerate(body):
        for j, (f, i) in enumerate(zip(features, cols)):
            v = _number(row[i])
            if v is None and missing == "error":
                what = "not finite" if _is_float(row[i]) else "not a number"
                raise DataError(f"{path}, line {line}, column '{f}': {row[i]!r} is {what}")
            values[r, j] = math.nan if v is None else v
    return values


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
        first = text.split("\n", 1)[0]
        rows = list(csv.reader(text.splitlines(), delimiter=max(",;\t", key=first.count)))
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"{path}: empty file, expected a header row")
    return rows


def _number(cell: str) -> float | None:
    """A cell's finite value, or None: empty, a missing-value marker, text, NaN or infinite."""
    t = cell.strip()
    if t.lower() in MISSING_MARKERS:
        return None
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _timestamps(
    body: list[tuple[int, list[str]]], ts_col: int | None, header: list[str], notes: list[str]
) -> np.ndarray | None:
    """Epoch seconds per row (NaN: unreadable), by the daemon's rule; None without a usable column."""
    if ts_col is None:
        return None
    out = np.full(len(body), np.nan)
    for r, (_, row) in enumerate(body):
        cell = row[ts_col].strip()
        if not cell:
            continue
        raw: float | str = cell
        try:
            raw = float(cell)
        except ValueError:
            pass
        try:
            out[r] = parse_ts(raw, math.nan)
        except TimestampError:
            pass
    if np.isnan(out).all():
        notes.append(f"column '{header[ts_col]}' holds no timestamp the daemon reads: ignored")
        return None
    return out


def _usable(
    values: np.ndarray, ts: np.ndarray | None, keys: list[str], features: Sequence[str], notes: list[str]
) -> np.ndarray:
    """The rows the daemon would score: every value finite, a readable timestamp newer than the stream's
    previous usable row's (the daemon rejects duplicates and readings out of order)."""
    keep: np.ndarray = np.isfinite(values).all(axis=1)
    if not keep.all():
        per = [f"'{f}' {n}" for f, n in zip(features, np.isnan(values).sum(axis=0)) if n]
        notes.append(f"{int((~keep).sum())} row(s) with a missing or non-numeric value left out ({', '.join(per)})")
    if ts is None:
        return keep
    bad_ts = keep & np.isnan(ts)
    keep &= ~bad_ts
    last: dict[str, float] = {}
    stale = 0
    for r in np.flatnonzero(keep).tolist():
        if ts[r] <= last.get(keys[r], -math.inf):
            keep[r] = False
            stale += 1
        else:
            last[keys[r]] = float(ts[r])
    if bad_ts.any():
        notes.append(f"{int(bad_ts.sum())} row(s) with an unreadable timestamp left out")
    if stale:
        notes.append(f"{stale} row(s) with a timestamp not newer than the previous row's left out")
    return keep


def _interval(ts: list[np.ndarray]) -> float | None:
    """The median positive step between consecutive readings of each stream, pooled."""
    steps = np.concatenate([np.diff(t[np.isfinite(t)]) for t in ts])
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None
