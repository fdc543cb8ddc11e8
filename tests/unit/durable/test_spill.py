"""Evicted streams spilled to disk come back with their state; replay after a crash stays exact."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.models import make_step_model
from support.outcomes import all_scored, present, scored
from support.traffic import T0, traffic

from edge_lstm import Engine, Reading, Rejection, Result, load_model
from edge_lstm.durable.spill import SqliteSpill
from edge_lstm.onnx_model import OnnxStepModel


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", layers=2))


def spill_for(model: OnnxStepModel, tmp_path: Path, name: str = "spill.db", **kw: Any) -> SqliteSpill:
    columns = Engine(model, **({"scoring": kw.pop("scoring")} if "scoring" in kw else {})).table.column_specs
    return SqliteSpill(tmp_path / name, model.state_shapes, len(model.meta.output.names), columns=columns, **kw)


def by_key(outcomes: Iterable[Result | Rejection]) -> dict[tuple[str, float], Result]:
    return {(o.stream, o.ts): o for o in outcomes if isinstance(o, Result)}


def test_spilled_streams_continue_exactly_as_if_never_evicted(model: OnnxStepModel, tmp_path: Path) -> None:
    readings = traffic(12, 8)
    roomy = Engine(model)
    small = Engine(model, max_streams=4, spill=spill_for(model, tmp_path))
    ref, got = {}, {}
    for i in range(0, len(readings), 3):
        ref.update(by_key(roomy.process(readings[i : i + 3])))
        got.update(by_key(small.process(readings[i : i + 3])))
    assert small.stats.evicted > 50 and small.stats.unspilled > 50
    assert len(small.table) == 4
    for key, r in ref.items():
        g = got[key]
        assert g.warming_up == r.warming_up and g.anomaly == r.anomaly
        assert np.allclose(present(g.prediction), present(r.prediction), atol=1e-5, rtol=0)
        assert abs(g.score - r.score) <= 1e-5


def test_without_spill_evicted_streams_start_over(model: OnnxStepModel) -> None:
    small = Engine(model, max_streams=4, max_evicted=0)
    out = [scored(small.process([r])[0]) for r in traffic(6, 3)]
    assert all(o.warming_up for o in out)  # every stream came back fresh: warm-up again
    assert small.stats.evicted_dropped == small.stats.evicted > 0


def test_returning_reading_takes_the_version_before_it(model: OnnxStepModel, tmp_path: Path) -> None:
    store = spill_for(model, tmp_path)
    e = Engine(model, max_streams=1, spill=store)
    a = [Reading("a", T0 + t, (0.1 * t, 0.0, 0.0)) for t in range(3)]
    e.process([a[0]])
    e.process([Reading("b", T0, (0, 0, 0))])  # evicts a (version at T0)
    e.process([a[1]])  # a back from spill; b spilled
    e.process([Reading("b", T0 + 1, (0, 0, 0))])  # evicts a (version at T0+1)
    # A replay of a[1] (after a crash) must see the version at T0, not the newer one at T0+1.
    old = store.get("a", a[1].ts)
    assert old is not None and old.last_ts == T0 and old.steps == 1
    assert present(store.get("a", a[2].ts)).steps == 2
    store.compact()  # the previous checkpoint generation may still replay a[1]: its version stays
    assert present(store.get("a", a[1].ts)).last_ts == T0
    store.compact()  # the next checkpoint: now only the newest version is needed
    assert store.get("a", a[1].ts) is None and present(store.get("a", a[2].ts)).steps == 2


def test_spill_store_is_bounded(model: OnnxStepModel, tmp_path: Path) -> None:
    store = spill_for(model, tmp_path, max_rows=50)
    e = Engine(model, max_streams=10, spill=store)
    for i in range(0, 300, 25):
        e.process([Reading(f"x{j}", T0 + i, (0, 0, 0)) for j in range(i, i + 25)])
    assert store.rows == 50 and store.dropped == 290 - 50


def test_spill_survives_reopening(model: OnnxStepModel, tmp_path: Path) -> None:
    store = spill_for(model, tmp_path)
    e = Engine(model, max_streams=1, spill=store)
    e.process([Reading("a", T0, (1, 2, 3))])
    e.process([Reading("b", T0, (1, 2, 3))])
    row = e.take_evicted() or None
    assert row is None  # spilled, not collected
    store.close()
    again = spill_for(model, tmp_path)
    back = again.get("a", T0 + 1)
    assert back is not None and back.steps == 1 and back.last_ts == T0


def test_rows_of_another_model_are_discarded(model: OnnxStepModel, tmp_path: Path) -> None:
    store = spill_for(model, tmp_path, model_sha256="a" * 64)
    e = Engine(model, max_streams=1, spill=store)
    e.process([Reading("a", T0, (1, 2, 3))])
    e.process([Reading("b", T0, (1, 2, 3))])
    store.close()
    assert spill_for(model, tmp_path, model_sha256="a" * 64).get("a", T0 + 1) is not None
    other = spill_for(model, tmp_path, model_sha256="b" * 64)
    assert other.discarded == 1 and other.get("a", T0 + 1) is None


def test_idle_evicted_streams_are_spilled_too(model: OnnxStepModel, tmp_path: Path) -> None:
    store = spill_for(model, tmp_path)
    e = Engine(model, spill=store)
    e.process([Reading("old", T0, (1, 2, 3)), Reading("new", T0 + 500, (1, 2, 3))])
    assert [r.stream for r in e.evict_idle(older_than_ts=T0 + 100)] == ["old"]
    (res,) = all_scored(e.process([Reading("old", T0 + 600, (1, 2, 3))]))
    assert res.score > 0  # compared with the prediction made before eviction: not a fresh start
    assert e.table.row("old").steps == 2 and e.stats.unspilled == 1


def test_scoring_statistics_are_spilled_and_restored(model: OnnxStepModel, tmp_path: Path) -> None:
    """Past the baseline period (5 readings here), a spilled stream's per-stream statistics and alarm
    state come back with it: rows, results and deviations equal an engine that never evicted."""
    from edge_lstm.scoring import ScoringConfig

    scoring = ScoringConfig(baseline=5)
    readings = traffic(12, 20)
    roomy = Engine(model, scoring=scoring)
    small = Engine(model, max_streams=4, scoring=scoring, spill=spill_for(model, tmp_path, scoring=scoring))
    ref, got = {}, {}
    for i in range(0, len(readings), 3):
        ref.update(by_key(roomy.process(readings[i : i + 3])))
        got.update(by_key(small.process(readings[i : i + 3])))
    assert small.stats.unspilled > 50
    assert sum(r.deviation is not None for r in ref.values()) > 100
    for key, r in ref.items():
        g = got[key]
        assert (g.deviation is None) == (r.deviation is None)
        if r.deviation is not None:
            assert abs(present(g.deviation) - r.deviation) <= 1e-9 * max(1.0, abs(r.deviation))
            assert abs(present(g.likelihood) - present(r.likelihood)) <= 1e-9
        assert g.anomaly == r.anomaly and g.alarm == r.alarm


def test_rows_spilled_with_other_columns_are_discarded(model: OnnxStepModel, tmp_path: Path) -> None:
    from edge_lstm.state import Column

    old = SqliteSpill(tmp_path / "s.db", model.state_shapes, len(model.meta.output.names), columns={})
    e = Engine(model, max_streams=2, spill=old)
    e.process(traffic(6, 2))
    old.close()
    cols = {"x": Column((2,), np.float64)}
    new = SqliteSpill(tmp_path / "s.db", model.state_shapes, len(model.meta.output.names), columns=cols)
    assert new.discarded > 0 and new.get("s0", T0 + 100) is None


def test_reset_forgets_a_stream_in_the_table_and_in_the_spill_store(model: OnnxStepModel, tmp_path: Path) -> None:
    engine = Engine(model, max_streams=2, spill=spill_for(model, tmp_path))
    engine.process(traffic(4, 6))  # s0, s1 spilled; s2, s3 in the table
    assert "s3" in engine.table and engine.describe_stream("s3")["steps"] == 6  # type: ignore[index]
    assert engine.reset_stream("s3") and engine.reset_stream("s0")  # one in the table, one spilled
    assert not engine.reset_stream("never-seen")
    out = all_scored(
        engine.process([Reading("s3", T0 + 100, (0.0, 0.0, 0.0)), Reading("s0", T0 + 100, (0.0, 0.0, 0.0))])
    )
    assert [o.warming_up for o in out] == [True, True]  # both start fresh
    assert engine.describe_stream("s3")["steps"] == 1  # type: ignore[index]
    assert engine.describe_stream("nope") is None


def test_spill_bytes_are_bounded_least_recently_seen_streams_go_first(model: OnnxStepModel, tmp_path: Path) -> None:
    """issue 20: 100,000 stream ids made a 434 MB spill.db; `spill.max_bytes` bounds it."""
    bound = 1 << 20
    store = spill_for(model, tmp_path, max_bytes=bound)
    e = Engine(model, max_streams=8, spill=store)
    for t in range(3):  # every stream seen three times, in the same order: stream k last at T0 + t
        e.process([Reading(f"s{k:05d}", T0 + t + k * 1e-4, (1.0, 2.0, 3.0)) for k in range(2000)])
    assert store.used_bytes() <= bound
    assert store.dropped_streams > 0
    spilled = {row[0] for row in store.db.execute("SELECT DISTINCT stream FROM spill")}
    newest = {f"s{k:05d}" for k in range(2000 - 8 - len(spilled), 2000 - 8)}
    assert spilled == newest  # the most recently seen streams are the ones kept


def test_a_spill_write_that_fails_loses_rows_not_the_daemon(model: OnnxStepModel, tmp_path: Path) -> None:
    import sqlite3

    errors: list[str] = []
    store = spill_for(model, tmp_path, on_error=lambda what, e: errors.append(f"{what}: {e}"))

    class FullDb:
        in_transaction = False

        def execute(self, *a: object, **k: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        executemany = execute

    store.db = FullDb()  # type: ignore[assignment]
    e = Engine(model, max_streams=1, spill=store)
    out = e.process([Reading("a", T0, (1.0, 2.0, 3.0))]) + e.process([Reading("b", T0, (1.0, 2.0, 3.0))])
    out += e.process([Reading("a", T0 + 1, (1.0, 2.0, 3.0))])
    assert all(isinstance(o, Result) for o in out)  # every reading scored
    assert store.lost >= 1 and errors and "disk is full" in errors[0]
