"""Opening the daemon's state on disk at start: the spill store and the durable state (restored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..durable.spill import SqliteSpill
from ..durable.store import DurableState
from ..engine import Engine
from ..ports import StepModel
from .config import Settings


def open_state(
    settings: Settings, engine: Engine, model: StepModel, log: Any
) -> tuple[DurableState | None, SqliteSpill | None]:
    """The durable state (checkpoint + journal, restored into `engine`) and the spill store attached to
    `engine`, as configured; None for what is off."""
    s = settings
    sha = model.sha256
    durable = None
    if s.checkpoint.enabled and sha:
        # Takes the state dir lock: before anything in the directory is opened, so that a second daemon
        # on it stops (StateDirBusy) without touching it (the spill store below would delete the first
        # one's spilled rows if the second serves another model).
        durable = DurableState(Path(s.state_dir), engine, sha, log, fsync_interval_s=s.checkpoint.fsync_interval_s)
    spill = None
    if s.engine.evicted == "spill":
        Path(s.state_dir).mkdir(parents=True, exist_ok=True)
        spill = SqliteSpill(
            Path(s.state_dir) / "spill.db",
            model.state_shapes,
            len(model.meta.output.names),
            columns=engine.table.column_specs,
            max_rows=s.engine.max_spilled,
            model_sha256=sha,
        )
        if spill.discarded:
            log.warning("spill_discarded", rows=spill.discarded, reason="made for another model or version")
        engine.spill = spill
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
