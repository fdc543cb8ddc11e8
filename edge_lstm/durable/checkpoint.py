"""Checkpoints of the state table: streamed to disk column by column, atomic, self-checking, model-bound.

A checkpoint holds every stream's row (recurrent state, last event time, step and anomaly counts,
pending prediction, the scorer's and alarm's per-stream columns as `col.<name>`) in LRU order, the
SHA-256 of the model it was made with, and the journal segment that continues it (journal.py).

Layout (version 2), everything little-endian:

    b"EDGE-LSTM-CHECKPOINT 2\\n"
    <u32 n> <header: JSON {model_sha256, journal_segment, created, streams, columns: [[name, dtype, shape]]}>
    streams × <u32 n> <UTF-8 stream id>                      (LRU order: least recently seen first)
    per column, in header order: streams × row, C order      (e.g. state0: float32 (2, 8) per stream)
    <32-byte SHA-256 of everything before>

`save` writes it a few thousand rows at a time (temp file, fsync, rename, directory fsync), so the peak
memory of a checkpoint is one chunk, not copies of the table (issue 22: 100k streams made 4-5 copies);
`load` checks the SHA-256 in a streaming pass before it reads anything, and `Checkpoint.restore_into`
reads one column at a time straight into the table. A file that is corrupt, truncated, or made for
another model raises `CheckpointRefused`; version 1 files (one `numpy.savez` blob) still load.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..ports import Disk
from ..state import StateTable, StreamState, Symmetric, current_name, store
from .disk import OsDisk

MAGIC = b"EDGE-LSTM-CHECKPOINT 2\n"
MAGIC_V1 = b"EDGE-LSTM-CHECKPOINT 1\n"
_DIGEST = 32  # bytes of the SHA-256 trailer
_COL = "col."  # prefix of per-stream columns; a checkpoint without some column restores it fresh
_U32 = struct.Struct("<I")
CHUNK_ROWS = 4096  # rows written (and read) per step: the checkpoint's memory peak is one chunk
_READ = 1 << 20


class CheckpointRefused(Exception):
    """The checkpoint cannot be used; `reason` is a short code (corrupt, model_mismatch, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Checkpoint:
    streams: list[str]  # LRU order: least recently seen first
    model_sha256: str
    journal_segment: int  # the first journal segment not covered by this checkpoint
    created: float
    columns: list[tuple[str, np.dtype, tuple[int, ...]]]
    read_column: Callable[[str], np.ndarray] = field(repr=False)  # (n, *shape) array of one column

    def restore_into(self, table: StateTable) -> None:
        """Put every stream into `table` (fresh slots in LRU order), one column at a time."""
        streams, n = self.streams, len(self.streams)
        slots = np.empty(n, np.intp)
        step = max(1, min(CHUNK_ROWS, table.max_streams))
        for i in range(0, n, step):
            # A table smaller than the checkpoint (max_streams lowered) keeps the most recent streams.
            slots[i : i + step] = table.acquire_many(streams[i : i + step], keep_evicted=False)[0]
        if n > table.max_streams:
            streams, slots = streams[-table.max_streams :], slots[-table.max_streams :]
        keep = slice(n - len(streams), n)
        for name, _, shape in self.columns:
            target = _target(table, name)
            key = current_name(name[len(_COL) :]) if name.startswith(_COL) else ""
            declared = table.column_specs[key].shape if key in table.column_specs else None
            if target is None or (declared or target.shape[1:]) != shape:
                continue  # a column this version no longer has (or reshaped): it starts from its init
            values = self.read_column(name)[keep]
            store(target, slots, table.to_stored(key, values) if key else values)

    @property
    def rows(self) -> list[StreamState]:
        """Detached rows (tests and tools; the daemon uses `restore_into`)."""
        cols = {name: self.read_column(name) for name, _, _ in self.columns}
        states = [cols[k] for k in sorted((k for k in cols if k.startswith("state")), key=lambda k: int(k[5:]))]
        return [
            StreamState(
                stream=s,
                states=[a[i] for a in states],
                last_ts=float(cols["last_ts"][i]),
                steps=int(cols["steps"][i]),
                anomalies=int(cols["anomalies"][i]),
                prediction=cols["prediction"][i],
                columns={k[len(_COL) :]: c[i] for k, c in cols.items() if k.startswith(_COL)},
            )
            for i, s in enumerate(self.streams)
        ]


def _target(table: StateTable, name: str) -> np.ndarray | None:
    if name.startswith(_COL):  # under this version's name (a column an older release named otherwise)
        return table.columns.get(current_name(name[len(_COL) :]))
    if name.startswith("state"):
        k = int(name[5:])
        return table.states[k] if k < len(table.states) else None
    fixed: dict[str, np.ndarray] = {
        "last_ts": table.last_ts,
        "steps": table.steps,
        "anomalies": table.anomalies,
        "prediction": table.prediction,
    }
    return fixed.get(name)


def _table_columns(table: StateTable) -> list[tuple[str, np.ndarray, Symmetric | None]]:
    """(name, stored array, how it is packed): a symmetric column is written whole (its declared shape,
    its stored dtype), so the file's layout does not depend on how the table stores it."""
    out: list[tuple[str, np.ndarray, Symmetric | None]] = [(f"state{k}", a, None) for k, a in enumerate(table.states)]
    out += [("last_ts", table.last_ts, None), ("steps", table.steps, None), ("anomalies", table.anomalies, None)]
    out += [("prediction", table.prediction, None)]
    out += [(f"{_COL}{k}", table.columns[k], table.packed(k)) for k in sorted(table.columns)]
    return out


def save(
    path: Path,
    table: StateTable,
    *,
    model_sha256: str,
    journal_segment: int,
    disk: Disk | None = None,
    written: Callable[[np.ndarray], None] | None = None,
) -> int:
    """Write the table to `path` atomically, a chunk of rows at a time; return the file size.
    `written` is called with each of the table's arrays once it is in the file (never read again)."""
    disk = disk if disk is not None else OsDisk()
    # LRU order; the ids are written from the index's bytes (no str per stream: in a forked writer, every
    # object made is private memory, the unit's peak).
    idx = table.lru()
    columns = _table_columns(table)
    header = {
        "model_sha256": model_sha256,
        "journal_segment": journal_segment,
        "created": time.time(),
        "streams": len(idx),
        "columns": [
            [name, a.dtype.newbyteorder("<").str, [sym.k, sym.k] if sym else list(a.shape[1:])]
            for name, a, sym in columns
        ],
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = disk.create(tmp)
    digest = hashlib.sha256()
    size = 0

    def put(data: bytes) -> None:
        nonlocal size
        digest.update(data)
        disk.write(fd, data)
        size += len(data)

    try:
        head = json.dumps(header).encode()
        put(MAGIC + _U32.pack(len(head)) + head)
        for i in range(0, len(idx), CHUNK_ROWS):
            put(table.index.packed(idx[i : i + CHUNK_ROWS]))  # each id: u32 length (LE), UTF-8 bytes
        for _, a, sym in columns:
            little = a.dtype.newbyteorder("<")
            for i in range(0, len(idx), CHUNK_ROWS):
                rows = a[idx[i : i + CHUNK_ROWS]]
                if sym is not None:
                    rows = rows.take(sym.full, axis=1)  # whole matrices, row by row (the file's layout)
                put(rows.astype(little, copy=False).tobytes())
            if written is not None:
                written(a)
        disk.write(fd, digest.digest())
        disk.fsync(fd)
    except BaseException:
        disk.close(fd)
        tmp.unlink(missing_ok=True)  # a full disk must not keep a half-written temp file
        raise
    disk.close(fd)
    disk.replace(tmp, path)
    disk.fsync_dir(path.parent)
    return size + _DIGEST


def verify(path: Path) -> None:
    """Check the SHA-256 trailer without holding the file in memory; raises CheckpointRefused."""
    with open(path, "rb") as f:
        _check_digest(f, path.stat().st_size)


def _check_digest(f: BinaryIO, size: int) -> None:
    magic = f.read(len(MAGIC))
    if magic not in (MAGIC, MAGIC_V1) or size < len(MAGIC) + _DIGEST:
        raise CheckpointRefused("corrupt", "not an edge-lstm checkpoint (bad header or truncated)")
    digest = hashlib.sha256(magic)
    left = size - len(MAGIC) - _DIGEST
    while left > 0:
        chunk = f.read(min(_READ, left))
        if not chunk:
            raise CheckpointRefused("corrupt", "truncated while reading")
        digest.update(chunk)
        left -= len(chunk)
    if f.read(_DIGEST) != digest.digest():
        raise CheckpointRefused("corrupt", "checksum mismatch: SHA-256 of the content differs from its trailer")


def load(path: Path, *, model_sha256: str, state_shapes: list[tuple[int, ...]]) -> Checkpoint | None:
    """Read a checkpoint's header (after checking its checksum); None if there is none. Raises
    CheckpointRefused for one that cannot be used. Columns are read when restored."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        size = path.stat().st_size
        _check_digest(f, size)
        f.seek(0)
        if f.read(len(MAGIC)) == MAGIC_V1:
            ck = _load_v1(f.read(size - len(MAGIC) - _DIGEST))
        else:
            ck = _load_v2(path, f, size)
    if ck.model_sha256 != model_sha256:
        raise CheckpointRefused(
            "model_mismatch", f"made for model sha256 {ck.model_sha256[:12]}…, serving {model_sha256[:12]}…"
        )
    shapes = {name: shape for name, _, shape in ck.columns}
    for k, want in enumerate(state_shapes):
        if shapes.get(f"state{k}") != tuple(want):
            raise CheckpointRefused("corrupt", f"state{k} has shape {shapes.get(f'state{k}')}, expected {tuple(want)}")
    return ck


def _load_v2(path: Path, f: BinaryIO, size: int) -> Checkpoint:
    try:
        (hlen,) = _U32.unpack(f.read(4))
        header = json.loads(f.read(hlen))
        n = int(header["streams"])
        streams = list(_read_ids(f, n))
        columns = [(str(name), np.dtype(dt), tuple(int(x) for x in shape)) for name, dt, shape in header["columns"]]
    except Exception as e:  # noqa: BLE001 - content whose checksum matched but does not parse is still corrupt
        raise CheckpointRefused("corrupt", f"unreadable header: {e}") from None
    offsets: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    at = f.tell()
    for name, dt, shape in columns:
        offsets[name] = (at, dt, shape)
        at += n * dt.itemsize * int(np.prod(shape, dtype=np.int64))
    if at + _DIGEST != size:
        raise CheckpointRefused("corrupt", f"columns end at byte {at}, the file at {size - _DIGEST}")

    def read_column(name: str) -> np.ndarray:
        start, dt, shape = offsets[name]
        with open(path, "rb") as g:
            g.seek(start)
            a = np.fromfile(g, dt, n * int(np.prod(shape, dtype=np.int64)))
        return a.reshape((n, *shape))

    return Checkpoint(
        streams,
        str(header.get("model_sha256")),
        int(header["journal_segment"]),
        float(header["created"]),
        columns,
        read_column,
    )


def _read_ids(f: BinaryIO, n: int) -> Iterator[str]:
    for _ in range(n):
        (k,) = _U32.unpack(f.read(4))
        yield f.read(k).decode("utf-8", "surrogatepass")


def _load_v1(body: bytes) -> Checkpoint:
    """A checkpoint written by an earlier version (one savez blob): read whole, as it was written."""
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "header"}
    except Exception as e:  # noqa: BLE001
        raise CheckpointRefused("corrupt", f"unreadable content: {e}") from None
    columns = [(k, a.dtype, tuple(a.shape[1:])) for k, a in arrays.items()]
    return Checkpoint(
        list(header["streams"]),
        str(header.get("model_sha256")),
        int(header["journal_segment"]),
        float(header["created"]),
        columns,
        arrays.__getitem__,
    )


def set_aside(path: Path, reason: str) -> Path:
    """Rename an unusable file out of the way (kept for inspection, never loaded again)."""
    target = path.with_name(f"{path.name}.{reason}.{int(time.time())}")
    path.replace(target)
    return target
