"""Known normal states (docs/scoring.md, "Known normal states"): the calibration data's operating states
excuse a stream that moved to one of them, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from support.outcomes import all_scored

from edge_lstm.contract import ModelFormatError, parse_meta
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.deviation import Deviation
from edge_lstm.state import Column
from edge_lstm_export.calibrate import MAX_STATES, STATE_WINDOW, normal_states


def fresh(columns: Mapping[str, Column], n: int) -> dict[str, np.ndarray]:
    return {k: np.broadcast_to(np.asarray(c.init, c.dtype), (n, *c.shape)).copy() for k, c in columns.items()}


def run(b: Deviation, u: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """[T, F] readings of one stream → (columns, deviation per reading)."""
    cols = fresh(b.columns, 1)
    e = [b.step(cols, u[t][None], np.array([t]), np.zeros(1, bool))[0][0] for t in range(len(u))]
    return cols, np.array(e)


def warming_machine(rng: np.random.Generator, n: int = 6000) -> np.ndarray:
    """Two white-noise sensors whose level drifts by 12 noise sd over the recording (a pump warming up),
    the third a constant."""
    u = rng.normal(0, 0.1, (n, 3))
    u[:, 0] += np.linspace(0, 1.2, n)
    u[:, 1] -= np.linspace(0, 0.8, n)
    u[:, 2] = 0.5
    return u


def states_of(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    meta = {"scaling": {"offset": [0.0] * u.shape[1], "scale": [1.0] * u.shape[1]}}
    st = normal_states([u], meta)
    return np.array([s["mean"] for s in st]), np.array([s["cov"] for s in st])


def test_normal_states_are_window_means_and_covariances_in_model_scaling() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, (1000, 2))
    meta = {"scaling": {"offset": [10.0, 0.0], "scale": [2.0, 4.0]}}
    st = normal_states([x, x[:149]], meta)
    # 10 windows of 100 from the first stream; the second: one whole window + 49 rows (< half: dropped)
    assert len(st) == 11
    u = (x - [10.0, 0.0]) / [2.0, 4.0]
    np.testing.assert_allclose(st[3]["mean"], u[300:400].mean(axis=0))
    np.testing.assert_allclose(st[3]["cov"], np.cov(u[300:400], rowvar=False, bias=True))
    np.testing.assert_allclose(st[10]["mean"], u[:100].mean(axis=0))


def test_long_calibration_data_gives_at_most_max_levels_wider_windows_spread_over_it() -> None:
    x = np.arange(100_000, dtype=np.float64)[:, None]
    st = normal_states([x], {"scaling": {"offset": [0.0], "scale": [1.0]}})
    assert len(st) == MAX_STATES
    window = 100_000 // MAX_STATES
    assert window > STATE_WINDOW
    assert st[0]["mean"][0] == pytest.approx((window - 1) / 2)
    assert st[-1]["mean"][0] > 100_000 - 2 * window  # the end of the data is covered


def test_a_stream_drifting_through_known_states_is_not_flagged_but_is_without_them() -> None:
    rng = np.random.default_rng(1)
    cfg = ScoringConfig(baseline=300, track=0)
    calibration = warming_machine(rng)
    replay = warming_machine(rng)  # the same machine, another day
    levels, cov = states_of(calibration)
    with_states = Deviation(3, cfg, levels, cov)
    without = Deviation(3, cfg)
    _, e1 = run(with_states, replay)
    _, e0 = run(without, replay)
    assert (e0[3000:] > without.h).mean() > 0.9  # its own five minutes: the drift is far out
    assert (e1[400:] > with_states.h).mean() < 0.01  # the calibration saw the machine there


def test_a_fault_away_from_every_known_state_still_scores_and_thresholds_do_not_change() -> None:
    rng = np.random.default_rng(2)
    cfg = ScoringConfig(baseline=300, track=0)
    levels, cov = states_of(warming_machine(rng))
    replay = warming_machine(rng)
    replay[3000:, 2] += 1.0  # the constant sensor moves: no known state has it there
    with_states = Deviation(3, cfg, levels, cov)
    cols1, e1 = run(with_states, replay)
    cols0, e0 = run(Deviation(3, cfg), replay)
    assert (e1[3100:] > with_states.h).all()
    assert (e1 <= e0 + 1e-12).all()  # the states only ever lower the deviation


def test_the_threshold_is_fitted_to_the_streams_own_deviation() -> None:
    """A lenient known state (wide covariance, at the stream's level) excuses the readings the tail is
    fitted from; the threshold must still be the one the stream's own deviation gives."""
    rng = np.random.default_rng(4)
    cfg = ScoringConfig(baseline=300, track=0)
    u = rng.normal(0, 1, (600, 3))
    u[300:] *= 1.4  # noisier after the baseline: the stream's own tail fit raises its threshold
    lenient = Deviation(3, cfg, np.zeros((1, 3)), 100.0 * np.eye(3)[None])
    cols1, e1 = run(lenient, u)
    cols0, e0 = run(Deviation(3, cfg), u)
    assert e1[360:400].max() < 0.5 * e0[360:400].min()  # the state excuses them
    np.testing.assert_array_equal(cols1["deviation.h"], cols0["deviation.h"])
    assert cols0["deviation.h"][0] > 1.05 * lenient.h  # and the fit did move the threshold


def test_known_states_can_be_turned_off() -> None:
    levels, cov = states_of(warming_machine(np.random.default_rng(3)))
    b = Deviation(3, ScoringConfig(known_states=False), levels, cov)
    assert b.state_mean is None and "deviation.ek" not in b.columns


def _meta(states: object) -> str:
    import json

    return json.dumps(
        {
            "schema_version": 1,
            "name": "m",
            "version": "1",
            "features": ["a", "b"],
            "scaling": {"offset": [0, 0], "scale": [1, 1]},
            "output": {"kind": "score", "names": ["s"]},
            "io": {"input": "x", "output": "y", "state": [{"input": "h", "output": "h_out"}]},
            "calibration": {"threshold": 1.0, "states": states},
        }
    )


def test_the_model_format_checks_the_states() -> None:
    ok = parse_meta(_meta([{"mean": [0, 1], "cov": [[1, 0], [0, 1]]}]))
    assert ok.calibration is not None and ok.calibration.states is not None
    with pytest.raises(ModelFormatError, match=r"calibration.states\[0\]: mean must have 2 values"):
        parse_meta(_meta([{"mean": [0], "cov": [[1, 0], [0, 1]]}]))
    with pytest.raises(ModelFormatError, match=r"calibration.states\[0\]: mean must have 2 values and cov 2 x 2"):
        parse_meta(_meta([{"mean": [0, 1], "cov": [[1, 0]]}]))
    with pytest.raises(ModelFormatError, match="not a finite number"):
        parse_meta(_meta([{"mean": [0, float("nan")], "cov": [[1, 0], [0, 1]]}]))


def test_the_distances_equal_the_plain_mahalanobis_reference() -> None:
    """deviation.ek against d_k = EWMA of (u − m_k)ᵀ C̃_k⁻¹ (u − m_k) / F computed the obvious way."""
    rng = np.random.default_rng(5)
    F, K, base = 3, 4, 50
    cfg = ScoringConfig(baseline=base, track=0)
    mean = rng.normal(0, 3, (K, F))
    a = rng.normal(size=(K, F, F))
    cov = a @ a.transpose(0, 2, 1) / F
    b = Deviation(F, cfg, mean, cov)
    u = rng.normal(0, 3, (base + 40, F))
    cols, _ = run(b, u)
    eye = np.eye(F)
    shrunk = (1 - cfg.shrink) * cov + cfg.shrink * cov * eye + cfg.var_floor * eye
    d = np.full(K, 4.0 * b.h)
    for t in range(base, len(u)):
        for k in range(K):
            y = u[t] - mean[k]
            d[k] = (1 - cfg.alpha) * d[k] + cfg.alpha * (y @ np.linalg.solve(shrunk[k], y)) / F
    np.testing.assert_allclose(cols["deviation.ek"][0], d, rtol=1e-9)
    assert b.current(cols)[0] == pytest.approx(min(cols["deviation.e"][0], d.min()))


def _with_states(src: Path, dst: Path, states: list[dict[str, object]] | None) -> Path:
    import json

    import onnx

    m = onnx.load(str(src))
    entry = next(p for p in m.metadata_props if p.key == "edge_lstm")
    meta = json.loads(entry.value)
    if states is not None:
        meta["calibration"]["states"] = states
    entry.value = json.dumps(meta)
    onnx.save(m, str(dst))
    return dst


def test_a_reload_keeps_streams_resets_distances_to_other_states_and_refuses_another_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model
    from edge_lstm.alarm import AlarmPolicy
    from edge_lstm.scoring import ScoringConfig

    base = make_step_model(tmp_path / "m.onnx")
    eye = np.eye(3).tolist()
    one = [{"mean": [0.0, 0.0, 0.0], "cov": eye}, {"mean": [1.0, 1.0, 1.0], "cov": eye}]
    other = [{"mean": [5.0, 5.0, 5.0], "cov": eye}, {"mean": [1.0, 1.0, 1.0], "cov": eye}]
    cfg = ScoringConfig(baseline=20)
    engine = Engine(load_model(_with_states(base, tmp_path / "a.onnx", one)), scoring=cfg)
    rng = np.random.default_rng(0)
    for t in range(60):
        engine.process([Reading("s", 1e9 + t, tuple(rng.normal(0, 0.1, 3).tolist()))])
    ek = engine.table.columns["deviation.ek"]
    assert ek[0].min() < 1.0  # near the first state by now
    far = engine.scorer.columns["deviation.ek"].init
    # the same states: distances kept
    assert engine.swap_model(load_model(_with_states(base, tmp_path / "b.onnx", one)), cfg, AlarmPolicy())
    assert ek[0].min() < 1.0
    # other states, the same number: the stream stays, its distances start far again
    assert engine.swap_model(load_model(_with_states(base, tmp_path / "c.onnx", other)), cfg, AlarmPolicy())
    assert "s" in engine.table and engine.table.row("s").steps == 60
    np.testing.assert_array_equal(engine.table.columns["deviation.ek"][0], np.float32(far))  # stored float32
    # another number of states: the rows no longer fit, so the caller restarts
    three = [*other, {"mean": [2.0, 2.0, 2.0], "cov": eye}]
    assert not engine.swap_model(load_model(_with_states(base, tmp_path / "d.onnx", three)), cfg, AlarmPolicy())


def test_the_distances_are_checkpointed_and_a_restored_stream_continues_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model
    from edge_lstm.durable import checkpoint
    from edge_lstm.scoring import ScoringConfig

    eye = np.eye(3).tolist()
    states = [{"mean": [0.0, 0.0, 0.0], "cov": eye}, {"mean": [0.3, 0.3, 0.3], "cov": eye}]
    model = load_model(_with_states(make_step_model(tmp_path / "m.onnx"), tmp_path / "s.onnx", states))
    cfg = ScoringConfig(baseline=20)
    rng = np.random.default_rng(1)
    readings = [Reading("s", 1e9 + t, tuple(rng.normal(t / 200, 0.1, 3).tolist())) for t in range(120)]
    engine = Engine(model, scoring=cfg)
    engine.process(readings[:60])
    assert not np.allclose(engine.table.row("s").columns["deviation.ek"], engine.scorer.columns["deviation.ek"].init)
    checkpoint.save(tmp_path / "ck", engine.table, model_sha256=model.sha256, journal_segment=0)
    ck = checkpoint.load(tmp_path / "ck", model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None
    restored = Engine(model, scoring=cfg)
    for row in ck.rows:
        restored.table.restore(row)
    a = [o.deviation for o in all_scored(engine.process(readings[60:]))]
    b = [o.deviation for o in all_scored(restored.process(readings[60:]))]
    assert a == b
    np.testing.assert_array_equal(
        engine.table.row("s").columns["deviation.ek"], restored.table.row("s").columns["deviation.ek"]
    )
