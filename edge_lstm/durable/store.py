"""Durable state for the daemon: restore at start, journal before acknowledging, checkpoint when quiet.

The invariant that makes a restart crash-exact (docs/durability.md):

    state in memory = checkpoint + journal + readings stepped but not yet acknowledged

Readings in the last group are unacknowledged, so after a crash the broker redelivers them and they are
stepped again; the journal covers everything that was acknowledged since the checkpoint. A checkpoint
is therefore only taken when nothing is unacknowledged (the daemon pauses intake for a moment).

Two generations: checkpoints are `checkpoint.<n>`, `n` the journal segment that continues them, and the
newest two are kept with the journal from the older one on. A newest checkpoint that fails its checks at
start is set aside (logged with the file and the failed check) and the previous one plus the journal
gives the same state. A bare `checkpoint` is an earlier version's (one generation, loaded as the oldest).

A full disk (`OSError` from any write): the store stops journaling (`durable` False), warns at most once
a minute naming the directory and the error, and the daemon keeps serving. The next checkpoint that can
be written (the policy retries as soon as `space_back()`) covers everything, so durability resumes; older
generations are dropped then, since the journal has a gap after them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Engine
from ..ports import Disk
from ..reading import Reading
from ..service.startup import StartupError
from . import checkpoint
from .background import Background, release_pages
from .disk import FILE_MODE, OsDisk, private_dir
from .journal import Journal, replay_batches

CHECKPOINT = "checkpoint"
LOCK = "lock"
KEEP_GENERATIONS = 2
WARN_EVERY_S = 60.0  # a full disk is warned about at most this often
SPACE_MARGIN = 1 << 20  # free bytes beyond twice the last checkpoint's size before one is tried again
# Tables at least this big are checkpointed by a forked child (background.py); a smaller one is written
# in place (20,000 streams: ~0.2 s on the reference VM).
FORK_MIN_STREAMS = 20_000


class StateDirBusy(StartupError, RuntimeError):
    """Another process holds the state directory's lock (exit 2: restarting would not help)."""


class StateDirUnusable(StartupError, OSError):
    """The state directory cannot be created or locked (exit 2, one line naming it)."""


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
        disk: Disk | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        lock: int | None = None,
    ) -> None:
        """`lock`: the state directory's lock, taken by `lock_state_dir` (taken here when None); the
        durable state holds it until `close`."""
        self.dir = state_dir
        self.monotonic = monotonic  # the daemon's clock: the full-disk warning's rate limit
        self.engine = engine
        self.model_sha256 = model_sha256
        self.log = log
        self.disk: Disk = disk if disk is not None else OsDisk()
        self._lock = lock if lock is not None else lock_state_dir(self.dir)
        self.journal = Journal(self.dir, fsync_interval_s=fsync_interval_s, disk=self.disk)
        self.spill = spill  # SqliteSpill or None: compacted after each checkpoint
        self.checkpoints = 0
        self.last_checkpoint = time.monotonic()
        self.last_bytes = 0
        self.durable = True  # False while the state directory refuses writes
        self.disk_error: str | None = None
        self.disk_failures = 0  # writes the disk refused
        self.unjournaled = 0  # readings acknowledged while not durable (a crash then loses their steps)
        self.fallbacks = 0  # damaged newest checkpoints replaced by the previous generation at start
        self._warned = -float("inf")
        self._pending: Background | None = None  # a checkpoint being written by a forked child

    # ---- generations ----------------------------------------------------------------------------

    def generations(self) -> list[tuple[int, Path]]:
        return generations(self.dir)

    def _load_newest(self) -> checkpoint.Checkpoint | None:
        """The newest usable checkpoint; damaged ones are set aside (falling back to the previous)."""
        gens = self.generations()
        refused = None
        for _, path in reversed(gens):
            try:
                ck = checkpoint.load(path, model_sha256=self.model_sha256, state_shapes=self.engine.model.state_shapes)
            except checkpoint.CheckpointRefused as e:
                aside = checkpoint.set_aside(path, e.reason)
                older = [p for _, p in gens if p.exists()]
                self.log.warning(
                    "checkpoint_set_aside",
                    file=str(path),
                    reason=e.reason,
                    detail=e.detail,
                    moved_to=str(aside),
                    fallback=str(older[-1]) if older and e.reason == "corrupt" else "none: starting fresh",
                )
                refused = e.reason
                if e.reason == "corrupt":
                    continue
                for p in older:  # made for another model, as the ones before it
                    checkpoint.set_aside(p, e.reason)
                break
            if ck is not None:
                self.fallbacks += refused is not None
                return ck
        if refused is not None:
            # The journal continues a refused checkpoint: replayed onto a fresh table it would give
            # streams a partial history (or another model's). Start truly fresh; keep it for inspection.
            for _, seg in self.journal.segments():
                os.replace(seg, seg.with_name(f"{seg.name}.{refused}.{int(time.time())}"))
        return None

    # ---- start ----------------------------------------------------------------------------------

    def restore(self) -> dict[str, Any]:
        """Load the newest usable checkpoint and replay the journal after it; then write a fresh one."""
        t0 = time.monotonic()
        engine = self.engine
        ck = self._load_newest()
        loaded = load_into(engine, ck, self.journal)
        for d in self.journal.damaged:
            where = {"file": str(d.path), "offset": d.offset, "skipped_bytes": d.skipped_bytes}
            self.log.warning("journal_record_damaged", **where, detail=d.detail)
        engine.take_evicted()
        segments = [n for n, _ in self.journal.segments()]
        try:
            self.journal.open(max(segments + [loaded.from_segment - 1]) + 1)
        except OSError as e:
            self._failed(e, "opening the journal")
        info = {
            "streams": len(ck.streams) if ck is not None else 0,
            "replayed": loaded.replayed,
            "checkpoint": ck is not None,
            "fallback": bool(self.fallbacks),
            "journal_damaged": len(self.journal.damaged),
            "seconds": round(time.monotonic() - t0, 3),
        }
        self.log.info("state_restored", **info)
        self.checkpoint()
        return info

    def rebind(self, model_sha256: str) -> None:
        """A hot reload swapped in a model with the same state signature: checkpoints from now on are
        made for it (the next one, requested at once, covers the state so far)."""
        self.model_sha256 = model_sha256

    # ---- serving --------------------------------------------------------------------------------

    def record(self, entries: Iterable[tuple[int, Reading]]) -> None:
        """Journal (engine call, reading) pairs; call before acknowledging them. On a full disk the
        readings are acknowledged all the same (serving goes on) and counted as unjournaled."""
        if not self.durable:
            self.unjournaled += sum(1 for _ in entries)
            return
        try:
            self.journal.append(entries)
        except OSError as e:
            self._failed(e, "writing the journal")

    def tick(self) -> None:
        """The journal's fsync timer (the last records of a burst are synced without a further one);
        a background checkpoint's outcome once it is done."""
        if self.durable:
            self.journal.tick()
        if self._pending is not None:
            self.finish_pending()

    def space_back(self) -> bool:
        """Whether a checkpoint is worth trying again: room for two of the last one."""
        try:
            return self.disk.free_bytes(self.dir) >= 2 * self.last_bytes + SPACE_MARGIN
        except OSError:
            return False

    def checkpoint(self, *, background: bool = True) -> bool:
        """Write the whole table as a new generation. Only call when no stepped reading is
        unacknowledged. False if the disk refused it: serving goes on, not durable. A table of at least
        `FORK_MIN_STREAMS` streams is written by a forked child (background.py) unless `background` is
        False: True then means begun, and `tick` collects the outcome. One at a time: a checkpoint
        still being written is waited for first."""
        self.finish_pending(wait=True)
        t0 = time.monotonic()
        try:
            segment = self.journal.rotate()
        except OSError as e:
            self._failed(e, "writing a checkpoint")
            return False
        path = self.dir / f"{CHECKPOINT}.{segment}"
        # Not while not durable: readings acknowledged meanwhile are not journaled, and only a checkpoint
        # taken after them (in place) covers them.
        if background and self.durable and len(self.engine.table) >= FORK_MIN_STREAMS and type(self.disk) is OsDisk:
            self._pending = Background.start(lambda: self._write(path, segment, release_pages), path, t0)
            self._pending.failures = self.disk_failures
            return True
        try:
            outcome: int | BaseException = self._write(path, segment)
        except (checkpoint.CheckpointRefused, OSError) as e:
            outcome = e
        return self._written(path, t0, outcome)

    def _write(self, path: Path, segment: int, written: Callable[[np.ndarray], None] | None = None) -> int:
        table, sha = self.engine.table, self.model_sha256
        size = checkpoint.save(path, table, model_sha256=sha, journal_segment=segment, disk=self.disk, written=written)
        checkpoint.verify(path)  # read back: the older generation is dropped only behind a good one
        return size

    def finish_pending(self, *, wait: bool = False) -> None:
        """Collect a background checkpoint's outcome if it is done (`wait`: once it is)."""
        pending = self._pending
        if pending is None:
            return
        outcome = pending.poll(wait=wait)
        if outcome is not None:
            self._pending = None
            # A write the disk refused while the child ran left a gap after the snapshot: not durable yet.
            self._written(pending.path, pending.started, outcome, covers_all=pending.failures == self.disk_failures)

    def _written(self, path: Path, t0: float, outcome: int | BaseException, *, covers_all: bool = True) -> bool:
        if isinstance(outcome, checkpoint.CheckpointRefused):
            self.log.warning("checkpoint_unverified", file=str(path), detail=outcome.detail)
            path.unlink(missing_ok=True)
            return False
        if isinstance(outcome, OSError):
            self._failed(outcome, "writing a checkpoint")
            return False
        if isinstance(outcome, BaseException):
            self.log.warning("checkpoint_failed", file=str(path), detail=str(outcome))
            path.unlink(missing_ok=True)
            return False
        self._drop_old(gap=not self.durable)
        if not self.durable and covers_all:
            self.log.warning(
                "state_dir_writable", dir=str(self.dir), unjournaled=self.unjournaled, detail="durable again"
            )
            self.durable, self.disk_error = True, None
        self.checkpoints += 1
        self.last_bytes = outcome
        trim_heap()
        self.last_checkpoint = time.monotonic()
        self.log.debug(
            "checkpoint", streams=len(self.engine.table), bytes=outcome, seconds=round(self.last_checkpoint - t0, 3)
        )
        return True

    def _drop_old(self, *, gap: bool) -> None:
        """Keep the newest generations and the journal from the oldest kept one on. After a disk gap
        only the newest: the journal no longer continues the older ones."""
        gens = self.generations()
        keep = gens[-1:] if gap else gens[-KEEP_GENERATIONS:]
        for g in gens:
            if g not in keep:
                g[1].unlink(missing_ok=True)
        if keep[0][0] >= 0:
            self.journal.drop_before(keep[0][0])
        if self.spill is not None:
            # Older spilled versions were only needed to replay journal segments now dropped.
            self.spill.compact()

    def _failed(self, e: OSError, what: str) -> None:
        """The disk refused a write: stop journaling until a checkpoint can be written again."""
        self.journal.abandon()
        self.durable = False
        self.disk_failures += 1
        self.disk_error = f"{what}: {e.strerror or e}"
        now = self.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            self.log.warning(
                "state_dir_unwritable",
                dir=str(self.dir),
                error=self.disk_error,
                errno=errno.errorcode.get(e.errno or 0, str(e.errno)),
                unjournaled=self.unjournaled,
                detail="serving on without durability (a restart would lose the steps since the last "
                "checkpoint); a checkpoint is written as soon as there is space again",
            )

    def close(self, *, final_checkpoint: bool) -> None:
        self.finish_pending(wait=True)
        if final_checkpoint:
            self.checkpoint(background=False)
        try:
            self.journal.close()
        except OSError as e:
            self._failed(e, "closing the journal")
        os.close(self._lock)


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc `malloc_trim`; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
        ck.restore_into(engine.table)
        from_segment = ck.journal_segment
    replayed = 0
    for group in replay_batches(journal.replay(from_segment)):
        engine.process(group)
        replayed += len(group)
    return Loaded(from_segment, replayed)


def generations(state_dir: Path) -> list[tuple[int, Path]]:
    """(generation, path) of the checkpoints in a state directory, oldest first; the generation is
    the journal segment that continues it (-1: an earlier version's single `checkpoint`)."""
    found = []
    for p in state_dir.glob(f"{CHECKPOINT}*"):
        suffix = p.name[len(CHECKPOINT) + 1 :]
        if p.name == CHECKPOINT:
            found.append((-1, p))
        elif p.name.startswith(CHECKPOINT + ".") and suffix.isdigit():
            found.append((int(suffix), p))
    return sorted(found)


def newest_checkpoint(state_dir: Path) -> Path | None:
    """The newest checkpoint file in a state directory (tools and tests)."""
    gens = generations(state_dir)
    return gens[-1][1] if gens else None


def lock_state_dir(state_dir: Path) -> int:
    """Create the state directory (0700) and take its lock, before anything in it is opened: a second
    daemon on it stops (StateDirBusy) without touching it. The lock's file descriptor."""
    try:
        private_dir(state_dir)
        return _lock(state_dir / LOCK)
    except OSError as e:
        if isinstance(e, StartupError):
            raise
        raise StateDirUnusable(
            f"state_dir: cannot use state directory {state_dir}: {e.strerror or e} [env EDGE_LSTM_STATE_DIR]"
        ) from None


def _lock(path: Path) -> int:
    """One daemon per state directory: two writers would corrupt each other's journal."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirBusy(
            f"state_dir: state directory {path.parent} is in use by another edge-lstm process [env EDGE_LSTM_STATE_DIR]"
        ) from None
    return fd
