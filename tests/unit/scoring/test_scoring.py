"""The deviation channel and the alarm hysteresis against plain references: numpy statistics computed
the obvious way, known distributions, a hand-written state machine."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.outcomes import all_scored

from edge_lstm.alarm import COLUMNS as ALARM_COLUMNS
from edge_lstm.alarm import AlarmPolicy
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.deviation import Deviation
from edge_lstm.scoring.stats import ndtr, ndtri
from edge_lstm.state import Column


def fresh(columns: Mapping[str, Column], n: int) -> dict[str, np.ndarray]:
    return {k: np.broadcast_to(np.asarray(c.init, c.dtype), (n, *c.shape)).copy() for k, c in columns.items()}


def run(
    b: Deviation, u: np.ndarray, restart: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Feed [T, S, F] readings to S streams, one round per t."""
    T, S, _ = u.shape
    cols = fresh(b.columns, S)
    out = []
    for t in range(T):
        r = np.zeros(S, bool) if restart is None else restart[t]
        e, ready, like = b.step(cols, u[t], np.full(S, t), r)
        out.append(np.stack([e, ready, like]))
    return cols, out


def test_the_learned_baseline_equals_the_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    n, F = 300, 3
    # AR(1) features with different φ, correlated innovations.
    phi_true = np.array([0.0, 0.5, 0.9])
    innov = rng.multivariate_normal(np.zeros(F), [[1, 0.3, 0], [0.3, 1, 0.2], [0, 0.2, 1]], size=n)
    x = np.zeros((n, F))
    for t in range(1, n):
        x[t] = phi_true * x[t - 1] + innov[t]
    x += np.array([5.0, -2.0, 0.5])
    cfg = ScoringConfig(baseline=n, shrink=0.1, var_floor=1e-4)
    b = Deviation(F, cfg)
    cols, _ = run(b, x[:, None, :])

    # Reference: the same estimators written the obvious way.
    x0, x1 = x[:-1] - x[0], x[1:] - x[0]
    m0, m1 = x0.mean(0), x1.mean(0)
    c00 = (x0 - m0).T @ (x0 - m0) / len(x0)
    c10 = (x1 - m1).T @ (x0 - m0) / len(x0)
    phi = np.clip(np.diag(c10) / np.diag(c00), 0, 1)
    a = (x1 - m1) - phi * (x0 - m0)
    sigma = a.T @ a / len(a)
    sigma = 0.9 * sigma + 0.1 * np.diag(np.diag(sigma)) + 1e-4 * np.eye(F)
    np.testing.assert_allclose(cols["deviation.phi"][0], phi, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cols["deviation.mu"][0], m1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cols["deviation.P"][0], np.linalg.inv(sigma), rtol=1e-7)
    assert abs(phi[2] - 0.9) < 0.15 and phi[0] < 0.2  # and the estimators find what was generated


def test_streams_in_one_round_do_not_influence_each_other() -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(size=(120, 4, 2)) + np.array([0.0, 3.0, -7.0, 100.0])[None, :, None]
    b = Deviation(2, ScoringConfig(baseline=50))
    together, _ = run(b, u)
    for k in range(4):
        alone, _ = run(b, u[:, k : k + 1])
        for name in together:
            np.testing.assert_allclose(together[name][k], alone[name][0], rtol=1e-12, atol=1e-12, err_msg=name)


def test_normal_data_rarely_crosses_the_threshold_and_a_shift_does() -> None:
    rng = np.random.default_rng(2)
    F, n = 3, 20_000
    u = rng.normal(size=(n, 1, F))
    u[15_000:, 0, 1] += 4.0  # a sustained level shift of 4 sd on one feature
    # i.i.d. data: the χ² law holds as is (inflate 1); a fixed level (track 0): see the next test for tracking
    cfg = ScoringConfig(baseline=300, inflate=1.0, risk=1e-3, track=0)
    b = Deviation(F, cfg)
    _, out = run(b, u)
    e = np.array([o[0][0] for o in out])
    normal = e[300:15_000]
    assert (normal > b.h).mean() < 5 * cfg.risk  # about the risk asked for
    assert (e[15_100:] > b.h).all()  # and the fault scores for as long as it lasts


def test_tracking_follows_slow_drift_and_absorbs_only_a_lasting_change_slowly() -> None:
    rng = np.random.default_rng(6)
    n = 30_000
    u = rng.normal(size=(n, 1, 2))
    u[:, 0, 0] += np.linspace(0, 6, n)  # slow drift: 6 sd over the run
    u[20_000:, 0, 1] += 5.0  # a lasting change at 20,000
    fixed = Deviation(2, ScoringConfig(track=0))
    tracked = Deviation(2, ScoringConfig(track=3000))
    e_fixed = np.array([o[0][0] for o in run(fixed, u)[1]])
    e_tracked = np.array([o[0][0] for o in run(tracked, u)[1]])
    drift = slice(300, 20_000)
    assert (e_fixed[drift] > fixed.h).mean() > 0.3  # a frozen level flags the drift...
    assert (e_tracked[drift] > tracked.h).mean() < 0.01  # ...a tracked one does not
    assert (e_tracked[20_050:20_600] > tracked.h).all()  # the change still scores for a long while
    assert (e_tracked[-1000:] > tracked.h).mean() < 0.05  # and is the new normal in the end


def test_one_wild_reading_has_bounded_influence_and_a_lasting_fault_still_scores() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    u = rng.normal(size=(n, 1, 2))
    u[1000, 0, 0] += 100.0  # a single glitch of 100 sd
    u[1500:, 0, 1] += 6.0  # a lasting fault
    bounded = Deviation(2, ScoringConfig(threshold_method="chi2", influence=6.0))
    unbounded = Deviation(2, ScoringConfig(threshold_method="chi2", influence=0))
    cols, out = run(bounded, u)
    e = np.array([o[0][0] for o in out])
    e0 = np.array([o[0][0] for o in run(unbounded, u)[1]])
    alpha = bounded.config.alpha
    # The glitch lifts e by at most alpha x influence x h (plus the decay of what was there) ...
    assert e[1000] <= (1 - alpha) * e[999] + alpha * 6.0 * bounded.h + 1e-12
    assert (e[1000:1100] > bounded.h).sum() == 0  # ... so it flags nothing after itself
    assert (e0[1000:1100] > unbounded.h).sum() > 30  # unbounded, its tail flags for dozens of readings
    # A lasting fault drives e to influence x h > h and keeps it there.
    assert (e[1530:] > bounded.h).all()
    with pytest.raises(ValueError, match="influence"):
        ScoringConfig(influence=0.5)


def test_a_constant_stream_neither_divides_by_zero_nor_alarms() -> None:
    u = np.full((1000, 1, 2), 3.25)
    b = Deviation(2, ScoringConfig(baseline=100))
    cols, out = run(b, u)
    e = np.array([o[0][0] for o in out])
    assert np.isfinite(e).all() and (e[100:] <= b.h).all()
    assert np.isfinite(cols["deviation.P"]).all()


def test_a_gap_only_reanchors() -> None:
    rng = np.random.default_rng(3)
    u = rng.normal(size=(400, 1, 1)) * 0.1
    u[:, 0, 0] += np.linspace(0, 40, 400)  # φ ≈ 1: a drifting feature
    u[300:, 0, 0] += 30.0  # the sensor was offline: readings resume far away
    restart = np.zeros((400, 1), bool)
    restart[300] = True
    b = Deviation(1, ScoringConfig(baseline=200))
    _, with_gap = run(b, u, restart)
    _, without = run(b, u)
    assert with_gap[300][0][0] == with_gap[299][0][0]  # e unchanged by the re-anchoring reading
    assert without[300][0][0] > with_gap[300][0][0]


@pytest.mark.parametrize("p", [1e-6, 1e-4, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_normal_quantiles(p: float) -> None:
    z = ndtri(p)
    assert abs(float(ndtr(np.array(z))) - p) < 2e-7  # the vectorised CDF against the quantile
    assert abs(float(ndtr(np.array(z))) - 0.5 * math.erfc(-z / math.sqrt(2))) < 2e-7


def test_the_threshold_is_the_chi_square_quantile() -> None:
    """e ~ χ²(k)/k at k = F(2 − α)/α/inflate: check P(e > h) = risk by simulation of that law."""
    cfg = ScoringConfig(span=30, inflate=8.0, risk=1e-3)
    F = 8
    k = cfg.dof(F)
    rng = np.random.default_rng(4)
    sample = rng.chisquare(k, size=2_000_000) / k
    assert abs((sample > cfg.threshold(F)).mean() - 1e-3) < 2e-4


# ---- alarms ---------------------------------------------------------------------------------------


def reference_alarm(flags: list[bool], n: int, m: int, quiet: int) -> list[str]:
    """The hysteresis as a plain state machine: '.', 'R' (raised now), 'C' (cleared now)."""
    out: list[str] = []
    hist: list[bool] = []
    raised, calm = False, 0
    for f in flags:
        hist = (hist + [f])[-m:]
        calm_now = 0 if f else calm + 1  # unflagged readings in a row, counted while raised
        if raised and calm_now >= quiet:
            raised, hist, calm = False, [], 0
            out.append("C")
        elif not raised and sum(hist) >= n:
            raised, calm = True, calm_now
            out.append("R")
        else:
            calm = calm_now if raised else 0
            out.append(".")
    return out


@settings(max_examples=200, deadline=None)
@given(
    flags=st.lists(st.booleans(), min_size=1, max_size=300),
    n=st.integers(1, 6),
    extra=st.integers(0, 6),
    quiet=st.integers(1, 12),
)
def test_alarm_matches_the_reference_state_machine(flags: list[bool], n: int, extra: int, quiet: int) -> None:
    policy = AlarmPolicy(n, n + extra, quiet)
    cols = fresh(ALARM_COLUMNS, 1)
    got = []
    for t, f in enumerate(flags):
        raised, cleared = policy.update(cols, np.array([f]), np.array([float(t)]), np.array([float(t)]))
        got.append("R" if raised[0] else "C" if cleared[0] else ".")
    assert got == reference_alarm(flags, n, n + extra, quiet)


def test_a_k_of_n_alarm_never_flaps_on_isolated_flags() -> None:
    rng = np.random.default_rng(5)
    flags = rng.random(100_000) < 0.02  # 2 % of readings flagged at random (noise)
    policy = AlarmPolicy(raise_n=5, raise_window=10)
    cols = fresh(ALARM_COLUMNS, 1)
    raised = 0
    for t, f in enumerate(flags):
        r, _ = policy.update(cols, np.array([f]), np.array([1.0]), np.array([float(t)]))
        raised += int(r[0])
    assert raised == 0


def test_a_one_flag_alarm_is_raised_once_per_event() -> None:
    """Calibrated flags (`scoring.flags = "likelihood"`) with `raise_n = 1`: one flagged reading (a spike)
    raises the alarm; the flags of the same event that follow do not raise it again; it clears after
    `clear_after` quiet readings."""
    policy = AlarmPolicy(raise_n=1)  # as with scoring.flags = "likelihood"
    cols = fresh(ALARM_COLUMNS, 1)
    flags = [False] * 5 + [True] + [False, True, True, False] + [False] * 100 + [True]
    events = []
    for t, f in enumerate(flags):
        r, c = policy.update(cols, np.array([f]), np.array([1.0]), np.array([float(t)]), np.array([0.5]))
        if r[0] or c[0]:
            events.append(("raised" if r[0] else "cleared", t))
    assert events == [("raised", 5), ("cleared", 8 + policy.clear_after), ("raised", 110)]


def test_alarm_reports_the_episode() -> None:
    policy = AlarmPolicy(2, 3, 2)
    cols = fresh(ALARM_COLUMNS, 1)
    events = []
    for t, (f, score) in enumerate([(1, 5.0), (1, 9.0), (1, 7.0), (0, 1.0), (0, 1.0)]):
        r, c = policy.update(cols, np.array([bool(f)]), np.array([score]), np.array([100.0 + t]))
        if r[0] or c[0]:
            events.append(("raised" if r[0] else "cleared", cols["alarm.since"][0], cols["alarm.peak"][0],
                           cols["alarm.readings"][0]))  # fmt: skip
    assert events == [("raised", 101.0, 9.0, 1), ("cleared", 104.0, 9.0, 4)]


def test_a_model_without_calibration_still_scores_from_per_stream_statistics(tmp_path: Path) -> None:
    """No calibration: the forecast `score` flags nothing (no threshold), but the deviation channel,
    learned per stream, still finds a sustained fault (docs/scoring.md)."""
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model
    from edge_lstm.scoring import ScoringConfig

    model = load_model(make_step_model(tmp_path / "raw.onnx", calibration=False))
    engine = Engine(model, scoring=ScoringConfig(baseline=100))
    rng = np.random.default_rng(7)
    readings = []
    for t in range(400):
        v = rng.normal(0, 0.1, 3) + [1.0, 2.0, 3.0]
        if t >= 300:
            v[2] += 2.0  # 20 sd on one feature
        readings.append(Reading("s", 1_700_000_000.0 + t, tuple(v.tolist())))
    out = all_scored(engine.process(readings[:1]) + [engine.process([r])[0] for r in readings[1:]])
    assert all(o.threshold is None for o in out)
    assert not any(o.anomaly for o in out[:300])
    assert sum(o.anomaly for o in out[300:]) > 90


def test_alarm_clears_only_once_the_likelihood_is_back_in_the_body() -> None:
    """Two levels (a Schmitt trigger): unflagged readings whose likelihood is still above
    `clear_likelihood` (a deviation hovering just under its threshold) are not quiet, so the alarm neither
    clears nor re-raises there; it clears `clear_after` readings after the likelihood drops."""
    seq = [(True, 1.0)] * 3 + [(False, 0.995)] * 20 + [(False, 0.5)] * 5

    def events(policy: AlarmPolicy) -> list[tuple[str, int]]:
        cols = fresh(ALARM_COLUMNS, 1)
        out = []
        for t, (f, like) in enumerate(seq):
            r, c = policy.update(cols, np.array([f]), np.array([1.0]), np.array([float(t)]), np.array([like]))
            if r[0] or c[0]:
                out.append(("raised" if r[0] else "cleared", t))
        return out

    assert events(AlarmPolicy(2, 3, 5, clear_likelihood=0.99)) == [("raised", 1), ("cleared", 27)]
    # clear_likelihood = 1: any unflagged reading is quiet (the single-level rule)
    assert events(AlarmPolicy(2, 3, 5, clear_likelihood=1.0)) == [("raised", 1), ("cleared", 7)]


def test_alarm_clear_likelihood_is_validated() -> None:
    with pytest.raises(ValueError, match="clear_likelihood"):
        AlarmPolicy(clear_likelihood=0.0)
    with pytest.raises(ValueError, match="clear_likelihood"):
        AlarmPolicy(clear_likelihood=1.5)
