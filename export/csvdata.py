"""CSV of readings → one float array per stream, with errors that name the column and the line.

Layout: a header row (`,`, `;` or tab separated, as `edge-lstm replay` reads; a UTF-8 byte order mark is
skipped); optional `ts`/`timestamp`/`datetime`/`time` column (ignored: rows are taken in file order per
stream, one per sample interval); optional `stream` column splitting the file into several series; an
`anomaly` column is a label (as `edge-lstm evaluate` reads it), never a feature; every other column is a
feature (or only the `features` asked for, in that order).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

TIME_COLUMNS = ("ts", "timestamp", "datetime", "time")
LABEL_COLUMN = "anomaly"
STREAM_COLUMN = "stream"


@dataclass(frozen=True)
class CsvData:
    features: list[str]
    streams: dict[str, np.ndarray]  # stream name → [steps, features], file order

    @property
    def arrays(self) -> list[np.ndarray]:
        return list(self.streams.values())


def read_csv(path: str | Path, features: Sequence[str] | None = None) -> CsvData:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
        first = text.split("\n", 1)[0]
        rows = list(csv.reader(text.splitlines(), delimiter=max(",;\t", key=first.count)))
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError(f"{path}: empty file, expected a header row")
    header = [c.strip() for c in rows[0]]
    lower = [c.lower() for c in header]
    stream_col = lower.index(STREAM_COLUMN) if STREAM_COLUMN in lower else None
    skip = {i for i, c in enumerate(lower) if c in TIME_COLUMNS or c in (STREAM_COLUMN, LABEL_COLUMN)}
    if features is None:
        features = [c for i, c in enumerate(header) if i not in skip]
        if not features:
            raise DataError(f"{path}: no feature columns in header {header}")
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; header is {header}")
    cols = [header.index(f) for f in features]
    series: dict[str, list[list[float]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields for {len(header)} columns")
        values = [_value(row[i], f"{path}, line {line}, column '{f}'") for f, i in zip(features, cols)]
        key = row[stream_col].strip() if stream_col is not None else "0"
        series.setdefault(key, []).append(values)
    if not series:
        raise DataError(f"{path}: no data rows")
    return CsvData(list(features), {k: np.asarray(v, np.float64) for k, v in series.items()})


def _value(cell: str, where: str) -> float:
    try:
        v = float(cell)
    except ValueError:
        raise DataError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {cell!r} is not finite")
    return v
