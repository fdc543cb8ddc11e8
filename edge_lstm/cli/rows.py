"""CSV rows → readings, through the daemon's own decoder (shared by `replay` and `evaluate`)."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import TextIO

from ..contract import ModelFormatError
from ..onnx_model import OnnxStepModel, load_model
from ..reading import Decoder, Reading, Rejection

DEFAULT_STREAM = "replay"
TS_COLUMNS = ("ts", "timestamp", "datetime")
STREAM_COLUMN = "stream"


class ReplayError(Exception):
    """The CSV cannot be replayed (missing column, unreadable file, --strict rejection)."""


class RowReader:
    """CSV rows → Reading | Rejection, through the daemon's own `Decoder`.

    This is the only place a row becomes a reading: each row is turned into the JSON text a sensor
    would publish (`{"ts": ..., "<feature>": ...}`, cells written as they are, see `_cell`) and decoded
    by `Decoder.decode`, so replay accepts and rejects exactly what the daemon accepts and rejects.
    """

    def __init__(self, header: list[str], features: Iterable[str]) -> None:
        self.features = tuple(features)
        cols = [h.strip() for h in header]
        self.header = cols
        ts_cols = [c for c in TS_COLUMNS if c in cols]
        if not ts_cols:
            raise ReplayError(f"line 1: no timestamp column: expected one of {list(TS_COLUMNS)} (columns: {cols})")
        self.ts_index = cols.index(ts_cols[0])
        missing = [f for f in self.features if f not in cols]
        if missing:
            raise ReplayError(
                f"line 1: missing feature column(s) {missing}: the model's features are "
                f"{list(self.features)} (columns: {cols})"
            )
        dupes = sorted({c for c in cols if cols.count(c) > 1 and c})
        if dupes:
            raise ReplayError(f"line 1: duplicate column(s) {dupes}")
        self.stream_index = cols.index(STREAM_COLUMN) if STREAM_COLUMN in cols else None
        self.feature_index = [cols.index(f) for f in self.features]
        self.keys = [json.dumps(f) + ":" for f in self.features]
        used = {self.ts_index, *self.feature_index}
        if self.stream_index is not None:
            used.add(self.stream_index)
        self.ignored = [c for i, c in enumerate(cols) if i not in used]
        # Offline: no payload size limit and no clock to be ahead of.
        self.decoder = Decoder(self.features, max_payload_bytes=1 << 30, max_future_s=math.inf)

    def convert(self, row: list[str], line: int) -> Reading | Rejection:
        stream = DEFAULT_STREAM
        if self.stream_index is not None:
            stream = row[self.stream_index].strip() if self.stream_index < len(row) else ""
            if not stream:
                return Rejection("", "bad_stream", f"line {line}: empty '{STREAM_COLUMN}'")
        if len(row) != len(self.header):
            return Rejection(stream, "wrong_length", f"line {line}: {len(row)} fields for {len(self.header)} columns")
        parts = ['"ts":' + _cell(row[self.ts_index])]
        for key, i in zip(self.keys, self.feature_index):
            cell = row[i]
            if cell.strip():  # an empty cell is a missing feature
                parts.append(key + _cell(cell))
        payload = ("{" + ",".join(parts) + "}").encode()
        out = self.decoder.decode(stream, payload, arrival_ts=0.0)
        if isinstance(out, Rejection):
            return Rejection(stream, out.reason, f"line {line}: {out.detail}")
        return out


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _cell(text: str) -> str:
    """A CSV cell as the JSON text a sensor would send for it.

    A JSON number literal is passed through as written (so the decoder sees exactly the number a
    sensor would have sent); other spellings Python reads as numbers ("nan", "inf", "+1", ".5") become
    their JSON value (NaN/Infinity are then rejected as not finite); anything else is a string.
    """
    t = text.strip()
    if _JSON_NUMBER.fullmatch(t):
        return t
    try:
        return json.dumps(float(t), allow_nan=True)
    except ValueError:
        return json.dumps(t)


def read_rows(f: TextIO, features: Iterable[str]) -> tuple[RowReader, Iterator[tuple[int, list[str]]]]:
    """Open a CSV: the converter for its header and an iterator of (line number, row)."""
    first = f.readline()
    if first.startswith("\ufeff"):  # Excel's "CSV UTF-8" starts with a byte order mark
        first = first[1:]
    # The header decides the delimiter: the one of , ; tab that splits it into the most columns.
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(_chain_line(first, f), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayError("the CSV is empty (a header row is required)") from None
    except csv.Error as e:
        raise ReplayError(f"line 1: {e}") from None
    conv = RowReader(header, features)

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                yield reader.line_num, row
        except csv.Error as e:
            raise ReplayError(f"line {reader.line_num}: {e}") from None

    return conv, rows()


def _chain_line(first: str, rest: TextIO) -> Iterator[str]:
    yield first
    yield from rest


def open_model(path: str | None) -> OnnxStepModel:
    """The model `replay` and `evaluate` run: `path`, or the packaged default. A file that is not a
    servable model raises ValueError with a one-line message naming it."""
    try:
        return load_model(path)
    except ModelFormatError as e:
        raise ValueError(f"{path or 'the packaged default model'}: {e}") from None
