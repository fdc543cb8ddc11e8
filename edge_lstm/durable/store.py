"""Durable state for the daemon: restore at start, journal before acknowledging, checkpoint when quiet.

The invariant that makes a restart crash-exact (docs/durability.md):

    state in memory = checkpoint + journal + readings stepped but not yet acknowledged

Readings in the last group are unacknowledged, so after a crash the broker redelivers them and they are
stepped again; the journal covers everything that was acknowledged since the checkpoint. A checkpoint
is therefore only taken when nothing is unacknowledged (the daemon pauses intake for a moment).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..reading import Reading
from ..service.startup import StartupError
from . import checkpoint
from .journal import Journal, replay_batches

CHECKPOINT = "checkpoint"
LOCK = "lock"


class StateDirBusy(StartupError, RuntimeError):
    """Another process holds the state directory's lock (exit 2: restarting would not help)."""


class DurableState:
    def __init__(
        self,
        state_dir: Path,
        engine: Engine,
        model_sha256: str,
        log: Any,
        *,
        fsync_interval_s: float = 5.0,
        spill: Any = None,
    ) -> None:
        self.dir = state_dir
        self.engine = engine
        self.model_sha256 = model_sha256
        self.log = log
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.dir / LOCK)
        self.journal = Journal(self.dir, fsync_interval_s=fsync_interval_s)
        self.path = self.dir / CHECKPOINT
        self.spill = spill  # SqliteSpill or None: compacted after each checkpoint
        self.checkpoints = 0
        self.last_checkpoint = time.monotonic()

    def restore(self) -> dict[str, Any]:
        """Load the checkpoint and replay the journal after it; then start a fresh checkpoint."""
        t0 = time.monotonic()
        engine = self.engine
        try:
            ck = checkpoint.load(self.path, model_sha256=self.model_sha256, state_shapes=engine.model.state_shapes)
        except checkpoint.CheckpointRefused as e:
            aside = checkpoint.set_aside(self.path, e.reason)
            self.log.warning("checkpoint_set_aside", reason=e.reason, detail=e.detail, moved_to=str(aside))
            ck = None
            # The journal continues the refused checkpoint: replayed onto a fresh table it would give
            # streams a partial history (or another model's). Start truly fresh; keep it for inspection.
            for _, seg in self.journal.segments():
                os.replace(seg, seg.with_name(f"{seg.name}.{e.reason}.{int(time.time())}"))
        loaded = load_into(engine, ck, self.journal)
        restored, replayed = (len(ck.rows) if ck is not None else 0), loaded.replayed
        from_segment = loaded.from_segment
        engine.take_evicted()
        segments = [n for n, _ in self.journal.segments()]
        self.journal.open(max(segments + [from_segment - 1]) + 1)
        info = {
            "streams": restored,
            "replayed": replayed,
            "checkpoint": ck is not None,
            "seconds": round(time.monotonic() - t0, 3),
        }
        self.log.info("state_restored", **info)
        self.checkpoint()
        return info

    def rebind(self, model_sha256: str) -> None:
        """A hot reload swapped in a model with the same state signature: checkpoints from now on are
        made for it (the next one, requested at once, covers the state so far)."""
        self.model_sha256 = model_sha256

    def record(self, entries: Iterable[tuple[int, Reading]]) -> None:
        """Journal (engine call, reading) pairs; call before acknowledging them."""
        self.journal.append(entries)

    def checkpoint(self) -> None:
        """Write the whole table. Only call when no stepped reading is unacknowledged."""
        t0 = time.monotonic()
        segment = self.journal.rotate()
        size = checkpoint.save(self.path, self.engine.table, model_sha256=self.model_sha256, journal_segment=segment)
        self.journal.drop_before(segment)
        if self.spill is not None:
            # Older spilled versions were only needed to replay journal segments now dropped.
            self.spill.compact()
        self.checkpoints += 1
        self.last_checkpoint = time.monotonic()
        self.log.debug(
            "checkpoint", streams=len(self.engine.table), bytes=size, seconds=round(self.last_checkpoint - t0, 3)
        )

    def close(self, *, final_checkpoint: bool) -> None:
        if final_checkpoint:
            self.checkpoint()
        self.journal.close()
        os.close(self._lock)


@dataclass(frozen=True)
class Loaded:
    from_segment: int  # the first journal segment after the checkpoint
    replayed: int  # journal records stepped


def load_into(engine: Engine, ck: checkpoint.Checkpoint | None, journal: Journal) -> Loaded:
    """Put a checkpoint's rows into the engine's table and step the journal written after it.

    This is the whole of a restore; `DurableState.restore` adds the lock, the refusal handling and the
    fresh checkpoint around it, and the fault tests call it directly (read-only) to check what a restart
    would load.
    """
    from_segment = 0
    if ck is not None:
        for row in ck.rows:
            engine.table.restore(row)
        from_segment = ck.journal_segment
    replayed = 0
    for group in replay_batches(journal.replay(from_segment)):
        engine.process(group)
        replayed += len(group)
    return Loaded(from_segment, replayed)


def _lock(path: Path) -> int:
    """One daemon per state directory: two writers would corrupt each other's journal."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirBusy(
            f"state_dir: state directory {path.parent} is in use by another edge-lstm process [env EDGE_LSTM_STATE_DIR]"
        ) from None
    return fd
