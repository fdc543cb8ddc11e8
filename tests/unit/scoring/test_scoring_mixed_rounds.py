"""A round that mixes live streams with streams still learning their baseline.

Once every stream of a round is live (the steady state) the baseline indexes their rows by a full slice;
otherwise by the live mask. Each stream's scoring depends on its own row only, so the streams of a mixed
round must score as they do in rounds of their own: the old streams as in an engine without the new
ones, the new ones as in an engine without the old ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from support.outcomes import present

from edge_lstm import Engine, load_model
from edge_lstm.onnx_model import default_model_path
from edge_lstm.reading import Reading, Rejection
from edge_lstm.result import Result
from edge_lstm.service.config import Settings

OLD = [f"old-{i}" for i in range(4)]
NEW = [f"new-{i}" for i in range(3)]


def _engine() -> Engine:
    s = Settings()
    model = load_model(default_model_path(), threads=1)
    cal = model.meta.calibration
    assert cal is not None and cal.states, "the packaged model has known normal states (the _known path)"
    return Engine(model, max_streams=64, max_evicted=0, scoring=s.scoring.config(), alarms=s.alarm.policy())


def _readings(streams: list[str], n: int, features: int, t0: float, seed: int) -> list[list[Reading]]:
    rng = np.random.default_rng(seed)
    level = rng.uniform(5.0, 40.0, size=(len(streams), features))
    steps = []
    for t in range(n):
        vals = level + rng.normal(0.0, 0.5, size=level.shape) + 0.002 * t  # slow drift: level tracking moves
        steps.append([Reading(s, t0 + t, tuple(map(float, v))) for s, v in zip(streams, vals)])
    return steps


def _results(outs: Iterable[Result | Rejection]) -> dict[str, Result]:
    return {o.stream: o for o in outs if isinstance(o, Result)}


def test_streams_in_a_mixed_round_score_as_in_rounds_of_their_own() -> None:
    probe = _engine()
    features = len(probe.meta.features)
    warm = probe.scorer.config.baseline + 20  # the old streams are live from here on
    old = _readings(OLD, warm + 40, features, 1.7e9, seed=1)
    new = _readings(NEW, 40, features, 1.7e9 + warm, seed=2)
    alone_old, alone_new, mixed = _engine(), _engine(), _engine()
    for step in old[:warm]:
        alone_old.process(step)
        mixed.process(step)
    compared = 0
    for k in range(40):
        a = _results(alone_old.process(old[warm + k]))
        b = _results(alone_new.process(new[k]))
        m = _results(mixed.process(old[warm + k] + new[k]))  # live and learning streams in one round
        assert all(m[s].deviation is not None for s in OLD) and all(m[s].deviation is None for s in NEW)
        for ref in (a, b):
            for s, r in ref.items():
                got = m[s]
                np.testing.assert_allclose(got.score, r.score, rtol=1e-5, atol=1e-9)
                if r.deviation is not None:
                    np.testing.assert_allclose(present(got.deviation), r.deviation, rtol=1e-5, atol=1e-9)
                    np.testing.assert_allclose(present(got.likelihood), present(r.likelihood), rtol=1e-5, atol=1e-9)
                assert (got.anomaly, got.alarm) == (r.anomaly, r.alarm)
                compared += 1
    assert compared == 40 * (len(OLD) + len(NEW))
    # The whole per-stream scoring state, not only what is published (level, distances to the states).
    for alone, streams in ((alone_old, OLD), (alone_new, NEW)):
        for s in streams:
            want, have = alone.table.row(s).columns, mixed.table.row(s).columns
            for name, col in want.items():
                np.testing.assert_allclose(have[name], col, rtol=1e-5, atol=1e-9, err_msg=f"{s} {name}")
