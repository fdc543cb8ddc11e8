"""Unit tests of the pure engine with real onnxruntime sessions over generated step models."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from support.models import make_step_model
from support.outcomes import all_scored, present, scored

from edge_lstm import Engine, Reading, Rejection, Result, load_model
from edge_lstm.onnx_model import OnnxStepModel
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.forecast import effective_level, extrapolate


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    path = make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", hidden=8, layers=2, warmup_steps=2)
    return load_model(path)


def series(n_streams: int, n_steps: int, seed: int = 0) -> list[Reading]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_steps):
        for s in range(n_streams):
            out.append(Reading(f"s{s}", 1_700_000_000.0 + t, tuple(rng.normal(size=3).tolist())))
    return out


def results(outcomes: Iterable[Result | Rejection]) -> dict[tuple[str, float], Result]:
    return {(o.stream, o.ts): o for o in outcomes if isinstance(o, Result)}


def test_batched_equals_one_stream_at_a_time(model: OnnxStepModel) -> None:
    readings = series(n_streams=7, n_steps=30)
    rng = np.random.default_rng(1)
    # Alone: each reading stepped in its own call, batch 1.
    alone = Engine(model)
    ref = results([o for r in readings for o in alone.process([r])])
    # Batched: arbitrary chunks, so a stream often appears several times in one batch (rounds).
    batched = Engine(model)
    got: dict[tuple[str, float], Result] = {}
    i = 0
    while i < len(readings):
        n = int(rng.integers(1, 60))
        got.update(results(batched.process(readings[i : i + n])))
        i += n
    assert len(got) == len(ref) == len(readings)
    assert batched.stats.model_calls < alone.stats.model_calls / 3
    for key, r in ref.items():
        g = got[key]
        assert abs(g.score - r.score) <= 1e-5
        assert np.allclose(present(g.prediction), present(r.prediction), atol=1e-5, rtol=0)
        assert (g.anomaly, g.warming_up) == (r.anomaly, r.warming_up)
    for s in alone.table.slots:
        for a, b in zip(alone.table.row(s).states, batched.table.row(s).states):
            assert np.allclose(a, b, atol=1e-5, rtol=0)


def test_several_readings_of_one_stream_in_one_batch_apply_in_order(model: OnnxStepModel) -> None:
    readings = series(n_streams=1, n_steps=5)
    engine = Engine(model)
    out = all_scored(engine.process(readings))
    assert [o.ts for o in out] == [r.ts for r in readings]
    assert engine.stats.model_calls == 5  # one round per reading of the same stream
    assert engine.table.row("s0").steps == 5


def test_duplicate_and_out_of_order_are_rejected_and_not_stepped(model: OnnxStepModel) -> None:
    engine = Engine(model)
    r1, r2 = series(1, 2)
    engine.process([r1, r2])
    before = engine.table.row("s0")
    out = engine.process([r2, r1, Reading("s0", r1.ts - 10, r1.values)])
    assert [o.reason for o in out] == ["duplicate", "out_of_order", "out_of_order"]  # type: ignore[union-attr]
    after = engine.table.row("s0")
    assert after.steps == before.steps == 2
    for a, b in zip(before.states, after.states):
        assert np.array_equal(a, b)
    assert engine.stats.rejected == {"duplicate": 1, "out_of_order": 2}


def test_duplicate_inside_one_batch_is_stepped_once(model: OnnxStepModel) -> None:
    engine = Engine(model)
    (r,) = series(1, 1)
    out = engine.process([r, r])
    assert isinstance(out[0], Result)
    assert isinstance(out[1], Rejection) and out[1].reason == "duplicate"
    assert engine.table.row("s0").steps == 1


def test_decoder_rejections_pass_through_in_place(model: OnnxStepModel) -> None:
    engine = Engine(model)
    bad = Rejection("x", "not_json", "boom")
    (r,) = series(1, 1)
    out = engine.process([bad, r])
    assert out[0] is bad and isinstance(out[1], Result)
    assert engine.stats.rejected["not_json"] == 1


def test_forecast_scoring_matches_the_documented_formula(model: OnnxStepModel) -> None:
    engine = Engine(model)
    readings = series(1, 6, seed=3)
    out = [scored(engine.process([r])[0]) for r in readings]
    assert out[0].score == 0.0 and out[0].warming_up  # nothing was predicted yet
    cal = present(model.meta.calibration)
    for prev, cur, reading in zip(out, out[1:], readings[1:]):
        residual = np.asarray(reading.values) - np.asarray(present(prev.prediction))
        z = (residual - np.asarray(cal.residual_mean)) / np.asarray(cal.residual_std)
        assert cur.score == pytest.approx(math.sqrt(float(np.mean(z * z))), rel=1e-9)
        assert cur.anomaly == (cur.score > cal.threshold and not cur.warming_up)
    assert [o.warming_up for o in out] == [True, True, False, False, False, False]


def test_warming_up_never_flags_and_big_residual_flags_after(model: OnnxStepModel) -> None:
    engine = Engine(model)
    base = 1_700_000_000.0
    huge = (1e3, 1e3, 1e3)
    out = [
        scored(engine.process([Reading("p", base + t, huge if t in (1, 4) else (0.0, 0.0, 0.0))])[0]) for t in range(6)
    ]
    assert out[1].score > present(model.meta.calibration).threshold and not out[1].anomaly  # warming up
    assert out[4].anomaly and not out[5].warming_up
    assert engine.table.row("p").anomalies == sum(o.anomaly for o in out)


def test_results_carry_model_identity_and_threshold(model: OnnxStepModel) -> None:
    (r,) = series(1, 1)
    (res,) = all_scored(Engine(model).process([r]))
    d = res.to_dict()
    assert d["model"] == {"name": "test-model", "version": "0.0.1"}
    cal = present(model.meta.calibration)
    # The default carries the calibrated threshold to 1 − risk (docs/scoring.md); "off" publishes it as is.
    level = present(effective_level(cal.quantile, cal.samples))
    assert res.threshold == pytest.approx(
        extrapolate(present(cal.threshold), level, ScoringConfig().risk, 3), rel=1e-12
    )
    assert d["threshold"] == float(f"{res.threshold:.6g}") > present(cal.threshold)  # published to 6 digits
    (off,) = all_scored(Engine(model, scoring=ScoringConfig(extrapolate="off")).process([r]))
    assert off.threshold == cal.threshold
    assert isinstance(d["prediction"], dict) and set(d["prediction"]) == {"a", "b", "c"}


def test_score_model_publishes_output_as_is(tmp_path: Path) -> None:
    m = load_model(make_step_model(tmp_path / "s.onnx", kind="score", warmup_steps=0))
    (r,) = series(1, 1)
    (res,) = all_scored(Engine(m).process([r]))
    y, _ = m.step(np.asarray([r.values], np.float32), [np.zeros((1, *s), np.float32) for s in m.state_shapes])
    assert res.output == pytest.approx([float(y[0, 0])], abs=1e-6)
    assert res.score == pytest.approx(float(y[0, 0]), abs=1e-6)
    assert res.prediction is None


def test_lru_eviction_keeps_the_table_bounded(model: OnnxStepModel) -> None:
    engine = Engine(model, max_streams=4, max_evicted=100)
    t0 = 1_700_000_000.0
    for i in range(10):
        engine.process([Reading(f"s{i}", t0 + i, (0.0, 0.0, 0.0))])
        engine.process([Reading("hot", t0 + i, (0.0, 0.0, 0.0))])  # touched every time: never evicted
    assert len(engine.table) == 4 and engine.table.capacity == 4
    assert "hot" in engine.table and "s9" in engine.table and "s0" not in engine.table
    evicted = engine.take_evicted()
    assert [e.stream for e in evicted] == [f"s{i}" for i in range(7)]
    assert engine.take_evicted() == []
    # An evicted stream that comes back starts fresh.
    (res,) = all_scored(engine.process([Reading("s0", t0 + 100, (0.0, 0.0, 0.0))]))
    assert res.warming_up and engine.table.row("s0").steps == 1


def test_batch_larger_than_the_table_is_split_not_self_evicting(model: OnnxStepModel) -> None:
    engine = Engine(model, max_streams=3)
    out = engine.process([Reading(f"s{i}", 1_700_000_000.0, (0.0, 0.0, 0.0)) for i in range(8)])
    assert all(isinstance(o, Result) for o in out)
    assert len(engine.table) == 3


def test_idle_streams_are_evicted_by_event_time(model: OnnxStepModel) -> None:
    engine = Engine(model)
    engine.process([Reading("old", 1_700_000_000.0, (0, 0, 0)), Reading("new", 1_700_000_500.0, (0, 0, 0))])
    rows = engine.evict_idle(older_than_ts=1_700_000_100.0)
    assert [r.stream for r in rows] == ["old"]
    assert "old" not in engine.table and "new" in engine.table


def test_state_table_is_allocated_once_and_costs_memory_per_row_used(model: OnnxStepModel) -> None:
    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0]) / 1024

    before = rss_mb()
    engine = Engine(model, max_streams=200_000)  # ~200 MB of arrays if every row were touched
    allocated = rss_mb() - before
    # ~200 MB if every row were touched; the bound leaves room for the interpreter's own heap moving
    # (CI once measured 36 MB here, where 30 was the bound)
    assert engine.table.capacity == 200_000 and allocated < 60, f"{allocated:.0f} MB for an empty table"
    engine.process(series(n_streams=200, n_steps=1))
    row = engine.table.row("s0")
    engine.process(series(n_streams=300, n_steps=1, seed=9)[200:])  # no growth, no copy: rows stay put
    assert all(np.array_equal(a, b) for a, b in zip(row.states, engine.table.row("s0").states))
    assert engine.table.nbytes() < 300 * 2000  # the rows in use
