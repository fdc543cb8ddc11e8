"""The reading journal: what happened since the last checkpoint, so a restart is crash-exact.

Every accepted reading whose result the broker has taken is appended here *before* the reading is
acknowledged (daemon.py), and written to the OS at once (survives `kill -9`). fsync happens on an
interval and at rotation, not per reading, to spare SD cards; the interval's fsync runs on a helper
thread, since one fsync on an SD card can take longer than a hundred batches and would stall the worker
(results late by that much: docs/performance.md). At start, the checkpoint is loaded and
the journal segments it does not cover are replayed through the engine: the state is then exactly
what it was, and readings the broker redelivers are recognised as duplicates by event time.

Segment files are `journal.<n>`; records are `<u32 length><u32 crc32><payload>`, the payload
`0x02 <u64 batch><f64 ts><u16 n><n x f64 values><UTF-8 stream>` (little-endian). Records written by
earlier versions as JSON `[batch, stream, ts, values]` still replay: JSON encoding was ~15 % of the worker's time at
steady load (docs/performance.md), the binary record is exact and a few times cheaper.
`batch` numbers the engine call a reading was stepped in, so replay can step the same groups together
(micro-batches of different composition may differ in the last float32 bit).
A damaged record (its crc32 or length does not check) is skipped, logged and counted (`damaged`):
replay resynchronises at the next record that checks, so the good records after it are not lost. Only
a tail with no good record after it (the torn last write of a crash) is cut off.

Every write goes through the disk port (`Disk`, durable/disk.py): a full disk raises from `append`,
and the caller (store.py) decides what to do (serve on, not durable).
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..ports import Disk
from ..reading import Reading
from .disk import OsDisk

_HEAD = struct.Struct("<II")
MAX_RECORD = 1 << 20
_BINARY = 0x02  # first payload byte of a binary record; a JSON record starts with "["
_FIXED = struct.Struct("<BQdH")  # marker, batch, ts, number of values


_RECORDS: dict[int, struct.Struct] = {}  # the fixed part and n values, per n (every stream of a model has the same n)


def _encode(batch: int, r: Reading) -> bytes:
    values = r.values
    n = len(values)
    fixed = _RECORDS.get(n)
    if fixed is None:
        fixed = _RECORDS[n] = struct.Struct(f"<BQdH{n}d")
    return fixed.pack(_BINARY, batch, r.ts, n, *values) + r.stream.encode()


def _decode(payload: bytes) -> tuple[int, Reading]:
    if payload[:1] == b"[":  # written by an earlier version
        batch, stream, ts, values = json.loads(payload)
        return int(batch), Reading(str(stream), float(ts), tuple(float(v) for v in values))
    marker, batch, ts, n = _FIXED.unpack_from(payload)
    if marker != _BINARY:
        raise ValueError(f"unknown journal record type {marker}")
    at = _FIXED.size + 8 * n
    values = struct.unpack_from(f"<{n}d", payload, _FIXED.size)
    return batch, Reading(payload[at:].decode(), ts, values)


@dataclass(frozen=True)
class Damage:
    """A damaged stretch of a segment that replay skipped."""

    path: Path
    offset: int
    skipped_bytes: int
    detail: str


class Journal:
    def __init__(self, directory: Path, *, fsync_interval_s: float = 5.0, disk: Disk | None = None) -> None:
        self.dir = directory
        self.fsync_interval_s = fsync_interval_s
        self.disk: Disk = disk if disk is not None else OsDisk()
        self.segment = -1
        self._file: int | None = None  # the open segment's descriptor (written through the disk port)
        self._last_fsync = time.monotonic()
        self._unsynced = False  # records written since the last fsync
        self.records = 0  # appended to the current segment
        self.damaged: list[Damage] = []  # what replay skipped
        # The background fsync: `_fd` is read and closed only under `_fd_lock`.
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._sync_due = threading.Event()
        self._syncer: threading.Thread | None = None
        self._sync_error: OSError | None = None
        self._closing = False

    # ---- writing --------------------------------------------------------------------------------

    def open(self, segment: int) -> None:
        """Append to segment `segment` (created if missing)."""
        self._close_file()
        self.segment = segment
        fd = self._file = self.disk.open_append(self.path(segment))
        with self._fd_lock:
            self._fd = fd
        self.records = 0

    def path(self, segment: int) -> Path:
        return self.dir / f"journal.{segment}"

    def append(self, readings: Iterable[tuple[int, Reading]]) -> None:
        """Write (batch, reading) pairs and hand them to the OS (a process crash no longer loses them)."""
        f = self._file
        if f is None:
            raise RuntimeError("journal is not open")
        if self._sync_error is not None:
            raise self._sync_error  # the disk failed under the background fsync: stop as a direct one would
        # One write per batch, the records built first: about a third less time than a write per record.
        parts: list[bytes] = []
        head, crc32 = _HEAD.pack, zlib.crc32
        for batch, r in readings:
            payload = _encode(batch, r)
            parts.append(head(len(payload), crc32(payload)))
            parts.append(payload)
        n = len(parts) // 2
        if n:
            self.disk.write(f, b"".join(parts))
            self.records += n
            self._unsynced = True
            self.tick()

    def tick(self) -> None:
        """fsync (on the helper thread) if records are waiting for it and `fsync_interval_s` has passed;
        called after every append and from the worker's loop, so the last records of a burst are synced
        on time even if no further record comes."""
        if self._unsynced and self._file is not None:
            now = time.monotonic()
            if now - self._last_fsync >= self.fsync_interval_s:
                self._last_fsync = now
                self._unsynced = False
                self._request_sync()

    def sync(self) -> None:
        """fsync now, in this thread (rotation, close)."""
        with self._fd_lock:
            if self._fd is not None:
                self.disk.fsync(self._fd)
        self._unsynced = False
        self._last_fsync = time.monotonic()

    def abandon(self) -> None:
        """Stop writing the current segment without syncing it (the disk refused a write: its tail may
        be torn, replay cuts it). The next `open` or `rotate` starts a new segment."""
        with self._fd_lock:
            fd, self._fd, self._file = self._fd, None, None
        if fd is not None:
            try:
                self.disk.close(fd)
            except OSError:
                pass
        self._sync_error = None
        self._unsynced = False

    def _request_sync(self) -> None:
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._syncer.start()
        self._sync_due.set()

    def _sync_loop(self) -> None:
        while True:
            self._sync_due.wait()
            self._sync_due.clear()
            if self._closing:
                return
            with self._fd_lock:  # the file may be rotated or closed meanwhile: then it was synced there
                if self._fd is not None:
                    try:
                        self.disk.fsync(self._fd)  # releases the GIL: the worker goes on meanwhile
                    except OSError as e:
                        self._sync_error = e

    def rotate(self) -> int:
        """Make the current segment durable and continue in a new one; return its number."""
        if self._file is not None:
            self.sync()
        self.open(self.segment + 1)
        return self.segment

    def drop_before(self, segment: int) -> None:
        """Delete segments a checkpoint now covers."""
        for n, p in self.segments():
            if n < segment:
                p.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_file()
        if self._syncer is not None:
            self._closing = True
            self._sync_due.set()
            self._syncer.join()
            self._syncer, self._closing = None, False

    def _close_file(self) -> None:
        if self._file is not None:
            self.sync()
            with self._fd_lock:
                self._fd = None
                self.disk.close(self._file)
            self._file = None

    # ---- reading --------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.dir.glob("journal.*"):
            suffix = p.name.split(".", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), p))
        return sorted(found)

    def replay(self, from_segment: int) -> Iterator[tuple[int, Reading]]:
        """(batch, reading) of every segment >= from_segment, in order; a torn tail is cut off."""
        for n, p in self.segments():
            if n >= from_segment:
                yield from _read_segment(p, self.damaged)


def replay_batches(records: Iterable[tuple[int, Reading]]) -> Iterator[list[Reading]]:
    """Group consecutive records of the same engine call."""
    group: list[Reading] = []
    current = None
    for batch, reading in records:
        if batch != current and group:
            yield group
            group = []
        current = batch
        group.append(reading)
    if group:
        yield group


def _record_at(data: bytes, pos: int) -> tuple[int, tuple[int, Reading]] | None:
    """(end, record) of a record that checks at `pos`, or None."""
    if pos + _HEAD.size > len(data):
        return None
    length, crc = _HEAD.unpack_from(data, pos)
    end = pos + _HEAD.size + length
    if length > MAX_RECORD or end > len(data):
        return None
    payload = data[pos + _HEAD.size : end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return end, _decode(payload)
    except (ValueError, TypeError, struct.error, UnicodeDecodeError):
        return None


def _next_record(data: bytes, pos: int) -> int | None:
    """The offset of the next record that checks after a damaged one at `pos` (None: none follows)."""
    for at in range(pos + 1, len(data) - _HEAD.size + 1):
        if _record_at(data, at) is not None:
            return at
    return None


def _read_segment(path: Path, damaged: list[Damage]) -> Iterator[tuple[int, Reading]]:
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        found = _record_at(data, pos)
        if found is None:
            resume = _next_record(data, pos)
            if resume is None:
                break  # the torn tail of a crash (or a damaged last record): cut below
            damaged.append(Damage(path, pos, resume - pos, "record does not check (crc32, length or content)"))
            pos = resume
            continue
        pos, record = found
        yield record
    if pos < len(data):
        # The torn tail of a crash (or damage): cut it so that appends continue after good records.
        with open(path, "r+b") as f:
            f.truncate(pos)
