"""Opening the daemon's state on disk at start, in the order the daemon is built in (service/daemon.py):

1. `open_state_dir`: the state directory's lock (when durable state is on), then the spill store, opened
   with the state table's columns before the engine exists, so that the engine gets it at construction;
2. the engine, with that spill store;
3. `open_durable`: the durable state on that engine, lock and spill store, restored.

Neither stops the daemon on a full disk: a spill store that cannot be opened is left out (evicted
streams are then dropped, with a warning), and the durable state serves on, not durable, until a
checkpoint can be written (durable/store.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable.disk import private_dir
from ..durable.spill import SqliteSpill
from ..durable.store import DurableState, StateDirUnusable, lock_state_dir
from ..engine import Engine
from ..ports import Disk, StepModel
from ..state import Column
from .config import Settings

SPILL_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class StateDir:
    """The state directory as opened before the engine: its lock (None: durable state is off) and the
    spill store (None: off, or it could not be opened)."""

    lock: int | None
    spill: SqliteSpill | None


def open_state_dir(
    settings: Settings,
    model: StepModel,
    columns: Mapping[str, Column],
    log: Any,
    monotonic: Callable[[], float] = time.monotonic,
) -> StateDir:
    """Lock the state directory if durable state is on, then open the spill store if configured.

    The lock comes first, before anything in the directory is opened, so that a second daemon on it
    stops (StateDirBusy) without touching it (the spill store would delete the first one's spilled rows
    if the second serves another model). `columns`: the state table's (`alarm.table_columns`)."""
    s = settings
    lock = lock_state_dir(Path(s.state_dir)) if s.checkpoint.enabled and model.sha256 else None
    spill = _open_spill(settings, columns, model, log, monotonic) if s.engine.evicted == "spill" else None
    return StateDir(lock, spill)


def open_durable(
    settings: Settings,
    state: StateDir,
    engine: Engine,
    log: Any,
    disk: Disk | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> DurableState | None:
    """The durable state (checkpoint + journal) on the locked directory, restored into `engine`; None
    when it is off. `disk`: the disk port (tests inject a full one)."""
    s = settings
    sha = engine.model.sha256
    if state.lock is None:
        log.warning(
            "durable_state_off",
            reason="checkpoint.enabled is false" if sha else "the model has no file hash",
            detail="state starts fresh at every start",
        )
        return None
    durable = DurableState(
        Path(s.state_dir),
        engine,
        sha,
        log,
        fsync_interval_s=s.checkpoint.fsync_interval_s,
        spill=state.spill,
        disk=disk,
        monotonic=monotonic,
        lock=state.lock,
    )
    durable.restore()
    return durable


def _open_spill(
    settings: Settings, columns: Mapping[str, Column], model: StepModel, log: Any, monotonic: Callable[[], float]
) -> SqliteSpill | None:
    s = settings
    state_dir = Path(s.state_dir)
    warned = [-SPILL_WARN_EVERY_S]

    def on_error(what: str, e: Exception) -> None:
        now = monotonic()
        if now - warned[0] >= SPILL_WARN_EVERY_S:  # a full disk fails every eviction: warn once a minute
            warned[0] = now
            log.warning("spill_failed", dir=str(state_dir), what=what, error=str(e), detail="evicted streams lost")

    try:
        private_dir(state_dir)
        spill = SqliteSpill(
            state_dir / "spill.db",
            model.state_shapes,
            len(model.meta.output.names),
            columns=columns,
            max_rows=s.engine.max_spilled,
            max_bytes=s.spill.max_bytes,
            model_sha256=model.sha256,
            on_error=on_error,
        )
    except (sqlite3.Error, OSError) as e:
        if isinstance(e, OSError) and not state_dir.is_dir():
            raise StateDirUnusable(
                f"state_dir: cannot use state directory {state_dir}: {e.strerror or e} [env EDGE_LSTM_STATE_DIR]"
            ) from None
        log.warning(
            "spill_unavailable",
            dir=str(state_dir),
            error=str(e),
            detail="evicted streams are dropped until a restart with space in the state directory",
        )
        return None
    if spill.discarded:
        log.warning("spill_discarded", rows=spill.discarded, reason="made for another model or version")
    return spill
