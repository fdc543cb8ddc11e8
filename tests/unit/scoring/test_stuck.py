"""Stuck sensors (scoring/channels/stuck.py): a run of one repeated value far longer than the baseline's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_lstm.result import encode
from edge_lstm.scoring.channels import stuck


def fresh(n: int, features: int) -> dict[str, np.ndarray]:
    return {
        k: np.broadcast_to(np.asarray(c.init, c.dtype), (n, *c.shape)).copy()
        for k, c in stuck.columns(features).items()
    }


def feed(x: np.ndarray, baseline: int, stuck_after: int, cols: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """[T, S, F] readings, one round per t → [T, S, F] stuck masks."""
    T, S, F = x.shape
    cols = fresh(S, F) if cols is None else cols
    return np.stack([stuck.update(cols, x[t], np.full(S, t), baseline, stuck_after) for t in range(T)])


def test_a_frozen_feature_is_stuck_after_the_limit_and_only_that_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 1, 2))
    x[300:, 0, 1] = x[299, 0, 1]  # feature 1 freezes; its run started at reading 299
    out = feed(x, baseline=200, stuck_after=60)
    assert not out[:, 0, 0].any()
    run_at = np.arange(500) - 299 + 1  # run length at each reading from 299 on
    first = int(np.flatnonzero(out[:, 0, 1])[0])
    assert run_at[first] == 61  # run > 60: the 61st identical value
    assert out[first:, 0, 1].all()


def test_the_limit_is_four_times_the_longest_baseline_run_for_a_quantised_sensor() -> None:
    # A quantised sensor: each value held 1..9 readings (the longest run is 9 in the baseline).
    rng = np.random.default_rng(1)
    vals: list[float] = [7.0] * 9  # the longest run, at the start
    k = 0
    while len(vals) < 400:  # consecutive blocks differ (0, 1, 2, 0, ...), so runs do not merge
        vals += [float(k % 3)] * int(rng.integers(1, 10))
        k += 1
    x = np.array(vals[:400])
    base = np.array(x[:300])
    longest = max(len(list(g)) for g in np.split(base, np.flatnonzero(np.diff(base)) + 1))
    assert longest == 9
    x = np.concatenate([x, np.full(100, 5.0)])  # then frozen for 100 readings
    out = feed(x[:, None, None], baseline=300, stuck_after=10)[:, 0, 0]
    assert not out[:400].any()  # its normal runs are fine
    first = int(np.flatnonzero(out)[0])
    assert first - 400 + 1 == 4 * 9 + 1


def test_constant_by_nature_disabled_and_unknown_never_flag() -> None:
    x = np.zeros((1000, 1, 1))  # constant from the start: a setpoint, not a stuck sensor
    assert not feed(x, baseline=300, stuck_after=10).any()
    y = np.random.default_rng(2).normal(size=(1000, 1, 1))
    y[400:] = 1.0
    assert feed(y, baseline=300, stuck_after=10).any()
    assert not feed(y, baseline=300, stuck_after=0).any()  # off
    # A stream restored from a checkpoint without these columns, after its baseline: not judged.
    cols = fresh(1, 1)
    out = [stuck.update(cols, y[t], np.array([t + 300]), 300, 10) for t in range(1000)]
    assert not np.any(out)


def test_streams_in_a_round_are_independent() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3, 2))
    x[350:, 1, 0] = 9.0
    out = feed(x, baseline=100, stuck_after=20)
    assert out[:, 1, 0].sum() == 400 - 350 - 20
    assert not out[:, [0, 2]].any() and not out[:, 1, 1].any()


def test_stuck_after_is_validated() -> None:
    from edge_lstm.scoring import ScoringConfig

    with pytest.raises(ValueError, match="stuck_after"):
        ScoringConfig(stuck_after=-1)


def test_the_engine_flags_names_and_publishes_a_stuck_sensor(tmp_path: Path) -> None:
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model
    from edge_lstm.scoring import ScoringConfig

    model = load_model(make_step_model(tmp_path / "m.onnx"))
    features = model.meta.features
    engine = Engine(model, scoring=ScoringConfig(baseline=100, stuck_after=30))
    rng = np.random.default_rng(4)
    out = []
    for t in range(300):
        v = rng.normal(0, 0.1, 3) + [1.0, 2.0, 3.0]
        if t >= 200:
            v[1] = 2.5  # frozen
        out += engine.process([Reading("s", 1_700_000_000.0 + t, tuple(v.tolist()))])
    named = [i for i, r in enumerate(out) if r.stuck]  # type: ignore[union-attr]
    assert named == list(range(230, 300))
    assert all(out[i].stuck == (features[1],) and out[i].anomaly for i in named)  # type: ignore[union-attr]
    doc = json.loads(encode(out[250]))  # type: ignore[arg-type]
    assert doc["stuck"] == [features[1]] and doc == json.loads(json.dumps(out[250].to_dict()))  # type: ignore[union-attr]
    assert "stuck" not in json.loads(encode(out[150]))  # type: ignore[arg-type]
