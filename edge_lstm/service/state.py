"""Opening the daemon's state on disk at start: the spill store and the durable state (restored).

Neither stops the daemon on a full disk: a spill store that cannot be opened is left out (evicted
streams are then dropped, with a warning), and the durable state serves on, not durable, until a
checkpoint can be written (durable/store.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..durable.disk import private_dir
from ..durable.spill import SqliteSpill
from ..durable.store import DurableState, StateDirUnusable
from ..engine import Engine
from ..ports import Disk, StepModel
from .config import Settings

SPILL_WARN_EVERY_S = 60.0


def open_state(
    settings: Settings,
    engine: Engine,
    model: StepModel,
    log: Any,
    disk: Disk | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[DurableState | None, SqliteSpill | None]:
    """The durable state (checkpoint + journal, restored into `engine`) and the spill store attached to
    `engine`, as configured; None for what is off. `disk`: the disk port (tests inject a full one)."""
    s = settings
    sha = model.sha256
    durable = None
    if s.checkpoint.enabled and sha:
        # Takes the state dir lock: before anything in the directory is opened, so that a second daemon
        # on it stops (StateDirBusy) without touching it (the spill store below would delete the first
        # one's spilled rows if the second serves another model).
        durable = DurableState(
            Path(s.state_dir),
            engine,
            sha,
            log,
            fsync_interval_s=s.checkpoint.fsync_interval_s,
            disk=disk,
            monotonic=monotonic,
        )
    spill = _open_spill(settings, engine, model, log, monotonic) if s.engine.evicted == "spill" else None
    if durable is None:
        log.warning(
            "durable_state_off",
            reason="checkpoint.enabled is false" if sha else "the model has no file hash",
            detail="state starts fresh at every start",
        )
        return None, spill
    durable.spill = spill
    durable.restore()
    return durable, spill


def _open_spill(
    settings: Settings, engine: Engine, model: StepModel, log: Any, monotonic: Callable[[], float]
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
            columns=engine.table.column_specs,
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
    engine.spill = spill
    return spill
