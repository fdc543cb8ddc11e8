"""Checkpoints of the state table: atomic (write, fsync, rename), self-checking, model-bound.

A checkpoint holds every stream's row (recurrent state, last event time, step and anomaly counts,
pending prediction, the scorer's and alarm's per-stream columns as `col.<name>`) in LRU order, the
SHA-256 of the model it was made with, and the journal segment
that continues it (journal.py). A file that is corrupt, truncated, or made for another model is set
aside (renamed, with a log line by the caller) and never stops the daemon.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..state import StateTable, StreamState

MAGIC = b"EDGE-LSTM-CHECKPOINT 1\n"
_DIGEST = 32  # bytes of the SHA-256 trailer
_COL = "col."  # prefix of per-stream columns; a checkpoint without some column restores it fresh


class CheckpointRefused(Exception):
    """The checkpoint cannot be used; `reason` is a short code (corrupt, model_mismatch, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Checkpoint:
    rows: list[StreamState]  # LRU order: least recently seen first
    model_sha256: str
    journal_segment: int  # the first journal segment not covered by this checkpoint
    created: float


def save(path: Path, table: StateTable, *, model_sha256: str, journal_segment: int) -> int:
    """Write the table to `path` atomically; return the file size."""
    streams = list(table.slots)  # LRU order
    idx = np.fromiter(table.slots.values(), np.intp, len(streams))
    header = {
        "model_sha256": model_sha256,
        "journal_segment": journal_segment,
        "created": time.time(),
        "streams": streams,
    }
    arrays = {f"state{k}": a[idx] for k, a in enumerate(table.states)}
    arrays.update(
        last_ts=table.last_ts[idx],
        steps=table.steps[idx],
        anomalies=table.anomalies[idx],
        prediction=table.prediction[idx],
    )
    arrays.update({f"{_COL}{k}": a[idx] for k, a in table.columns.items()})
    buf = io.BytesIO()
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    body = MAGIC + buf.getvalue()
    data = body + hashlib.sha256(body).digest()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(data)


def load(path: Path, *, model_sha256: str, state_shapes: list[tuple[int, ...]]) -> Checkpoint | None:
    """Read a checkpoint; None if there is none. Raises CheckpointRefused for one that cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
        raise CheckpointRefused("corrupt", "not an edge-lstm checkpoint (bad header or truncated)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointRefused("corrupt", "checksum mismatch (truncated or damaged file)")
    try:
        with np.load(io.BytesIO(body[len(MAGIC) :]), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            states = [z[f"state{k}"] for k in range(len(state_shapes))]
            last_ts, steps, anomalies, prediction = (z["last_ts"], z["steps"], z["anomalies"], z["prediction"])
            columns = {k[len(_COL) :]: z[k] for k in z.files if k.startswith(_COL)}
    except Exception as e:  # noqa: BLE001 - any decoding problem of a file whose checksum matched is still "corrupt"
        raise CheckpointRefused("corrupt", f"unreadable content: {e}") from None
    if header.get("model_sha256") != model_sha256:
        raise CheckpointRefused(
            "model_mismatch",
            f"made for model sha256 {str(header.get('model_sha256'))[:12]}…, serving {model_sha256[:12]}…",
        )
    streams = header["streams"]
    for k, (a, shape) in enumerate(zip(states, state_shapes)):
        if a.shape != (len(streams), *shape):
            raise CheckpointRefused("corrupt", f"state{k} has shape {a.shape}, expected {(len(streams), *shape)}")
    rows = [
        StreamState(
            stream=s,
            states=[a[i] for a in states],
            last_ts=float(last_ts[i]),
            steps=int(steps[i]),
            anomalies=int(anomalies[i]),
            prediction=prediction[i],
            columns={k: c[i] for k, c in columns.items()},
        )
        for i, s in enumerate(streams)
    ]
    return Checkpoint(rows, model_sha256, int(header["journal_segment"]), float(header["created"]))


def set_aside(path: Path, reason: str) -> Path:
    """Rename an unusable file out of the way (kept for inspection, never loaded again)."""
    target = path.with_name(f"{path.name}.{reason}.{int(time.time())}")
    os.replace(path, target)
    return target


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
