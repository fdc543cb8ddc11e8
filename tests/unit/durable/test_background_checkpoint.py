"""A checkpoint written by a forked child (durable/background.py): the worker serves on meanwhile, and
a restart from it plus the journal is exact (pure, no broker)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.models import make_step_model
from support.traffic import traffic

from edge_lstm import Engine, Result, load_model
from edge_lstm.durable import store
from edge_lstm.durable.store import DurableState, generations
from edge_lstm.onnx_model import OnnxStepModel


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = debug = error = _add


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", layers=2))


def same_tables(a: Engine, b: Engine) -> bool:
    if list(a.table.slots) != list(b.table.slots):  # same streams, same LRU order
        return False
    for s in a.table.slots:
        ra, rb = a.table.row(s), b.table.row(s)
        xs: list[Any] = [*ra.states, ra.prediction, *ra.columns.values(), ra.last_ts, ra.steps, ra.anomalies]
        ys: list[Any] = [*rb.states, rb.prediction, *rb.columns.values(), rb.last_ts, rb.steps, rb.anomalies]
        if ra.columns.keys() != rb.columns.keys():
            return False
        if not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(xs, ys)):
            return False
    return True


def serve(engine: Engine, d: DurableState, readings: list[Any], first: int) -> None:
    out = engine.process(readings)
    d.record((first + i, r) for i, (r, o) in enumerate(zip(readings, out)) if isinstance(o, Result))


def test_a_forked_checkpoint_snapshots_the_table_while_serving_goes_on(
    model: OnnxStepModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "FORK_MIN_STREAMS", 1)
    readings = traffic(4, 12)
    first = Engine(model)
    log = _Log()
    d = DurableState(tmp_path, first, model.sha256, log)
    d.restore()
    d.finish_pending(wait=True)
    serve(first, d, readings[:20], 0)
    before = d.checkpoints
    assert d.checkpoint() and d._pending is not None  # begun: the child writes it
    serve(first, d, readings[20:], 20)  # after the snapshot: in the journal, not in the checkpoint
    d.finish_pending(wait=True)
    assert d._pending is None and d.checkpoints == before + 1
    assert [e for e, _ in log.events].count("checkpoint") == before + 1
    newest, path = generations(tmp_path)[-1]
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    d.journal.close()  # a crash: no final checkpoint
    os.close(d._lock)
    second = Engine(model)
    info = DurableState(tmp_path, second, model.sha256, _Log()).restore()
    assert info["checkpoint"] and info["replayed"] == len(readings) - 20  # the checkpoint held the first 20
    assert same_tables(first, second)


def test_a_forked_checkpoint_that_fails_leaves_the_previous_generation(
    model: OnnxStepModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "FORK_MIN_STREAMS", 1)
    engine = Engine(model)
    log = _Log()
    d = DurableState(tmp_path, engine, model.sha256, log)
    d.restore()
    d.finish_pending(wait=True)
    serve(engine, d, traffic(3, 4), 0)
    kept = generations(tmp_path)

    def refuse(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(d, "_write", refuse)  # in the child
    assert d.checkpoint()
    d.finish_pending(wait=True)
    assert not d.durable and d.disk_error == "writing a checkpoint: No space left on device"
    assert set(kept) <= set(generations(tmp_path))  # nothing dropped behind a failed one
    d.close(final_checkpoint=False)


def test_a_disk_failure_while_the_child_writes_keeps_the_store_not_durable(
    model: OnnxStepModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings acknowledged after the snapshot and not journaled are in neither: only a checkpoint
    taken after them (in place, while not durable) makes the store durable again."""
    monkeypatch.setattr(store, "FORK_MIN_STREAMS", 1)
    engine = Engine(model)
    d = DurableState(tmp_path, engine, model.sha256, _Log())
    d.restore()
    d.finish_pending(wait=True)
    serve(engine, d, traffic(3, 4), 0)
    assert d.checkpoint() and d._pending is not None
    d._failed(OSError(28, "No space left on device"), "writing the journal")  # while the child runs
    d.finish_pending(wait=True)
    assert not d.durable  # the child's checkpoint succeeded, but the journal has a gap after it
    assert d.checkpoint() and d._pending is None  # not durable: written in place, covering everything
    assert d.durable
    d.close(final_checkpoint=False)
