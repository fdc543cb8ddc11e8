"""The surprise channel through the engine (a real ONNX step model): calibrated on normal streams of
several kinds, an alarm within 20 readings of a sustained 10σ shift and flags for most of it, an alarm for
a single 20σ spike, nothing else; a lasting change clears as `adapted` within the horizon; `accept`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from support.models import make_step_model

from edge_lstm import Engine, Reading, load_model
from edge_lstm.alarm import AlarmPolicy
from edge_lstm.ports import StepModel
from edge_lstm.result import Result
from edge_lstm.scoring import ScoringConfig

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> StepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", hidden=8, warmup_steps=2))


def streams(n: int, seed: int) -> dict[str, np.ndarray]:
    """[n, 3] normal readings of three kinds, the noise std of each feature 1 (before scaling)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    sine = 20 + 8 * np.sin(2 * np.pi * t / 288)[:, None] + rng.normal(0, 1, (n, 3))
    walk = 50 + np.cumsum(rng.normal(0, 0.05, (n, 3)), axis=0) + rng.normal(0, 1, (n, 3))
    counts = rng.poisson(30, (n, 3)).astype(float) / np.sqrt(30)  # noise std 1
    return {"sine": sine, "walk": walk, "counts": counts}


def likelihood_engine(model: StepModel) -> Engine:
    """`anomaly` from the calibrated likelihood (`scoring.flags = "likelihood"`), alarm on one flag."""
    return Engine(model, scoring=ScoringConfig(flags="likelihood"), alarms=AlarmPolicy(raise_n=1))


def default_engine(model: StepModel) -> Engine:
    """The daemon's defaults: `scoring.flags = "adaptive"`, an alarm at 5 of 10 flags or one very rare one."""
    return Engine(model)


ENGINES = pytest.mark.parametrize("make", [default_engine, likelihood_engine], ids=["defaults", "likelihood"])


def replay(model: StepModel, x: np.ndarray, dt: float = 300.0, engine: Engine | None = None) -> list[Result]:
    """One reading per `dt` seconds (5 minutes: a cloud metric, as NAB)."""
    engine = engine or likelihood_engine(model)
    return [engine.process([Reading("s", T0 + i * dt, tuple(row))])[0] for i, row in enumerate(x)]  # type: ignore[misc]


BASELINE = 300  # scoring.baseline: until then the (unfitted) test model's own calibration judges forecasts


def raised_at(out: list[Result]) -> list[int]:
    """Readings that raised the alarm once the stream's own law is learned."""
    return [
        i for i, r in enumerate(out) if i >= BASELINE and r.alarm_event is not None and r.alarm_event.state == "raised"
    ]


@ENGINES
def test_a_sustained_10_sigma_shift_of_a_1_hz_sensor_alarms_within_20_readings_and_stays_flagged(
    model: StepModel, make: Callable[[StepModel], Engine]
) -> None:
    """At 1 Hz the statistics forget over days (`scoring.horizon_s`): a fault of minutes stays surprising.
    (With a model fitted on the stream, the sine and random-walk cases: bench/quality.py, docs/quality.md.)"""
    x = streams(1500, 1)["counts"]
    start, length = 1200, 80
    x[start : start + length, 1] += 10.0
    out = replay(model, x, dt=1.0, engine=make(model))
    raised = raised_at(out)
    assert raised and all(start <= i < start + 20 for i in raised), raised  # nothing else alarms
    assert sum(r.anomaly for r in out[start : start + length]) > length / 2


@ENGINES
@pytest.mark.parametrize("dt", [1.0, 300.0])
def test_a_single_20_sigma_spike_raises_the_alarm_and_nothing_else_does(
    model: StepModel, dt: float, make: Callable[[StepModel], Engine]
) -> None:
    x = streams(1500, 2)["counts"]
    x[1300, 0] += 20.0
    out = replay(model, x, dt=dt, engine=make(model))
    assert raised_at(out) == [1300]


def test_the_likelihood_is_calibrated_on_normal_streams(model: StepModel) -> None:
    """After the baseline, the share of readings with likelihood >= 1 - eps is at most 3 eps, and within
    [eps/3, 3 eps] at 1e-3 (1e-4 needs far longer streams: bench/quality.py measures it on NAB and SKAB).
    On Gaussian noise the fourth-root exponential tail and the Bonferroni factor are conservative at 1e-2
    (measured 1.6e-3 here; on NAB's and SKAB's normal readings it is within the band: docs/quality.md)."""
    likes = []
    for seed in (3, 4):
        for x in streams(4000, seed).values():
            likes += [r.likelihood for r in replay(model, x) if r.likelihood is not None]
    like = np.asarray(likes)
    shares = {eps: float(np.mean(like >= 1 - eps)) for eps in (1e-2, 1e-3)}
    assert shares[1e-2] <= 3e-2 and 1e-3 / 3 <= shares[1e-3] <= 3e-3, shares


def test_surprise_is_minus_log10_of_one_minus_the_likelihood_and_does_not_saturate(model: StepModel) -> None:
    x = streams(600, 5)["sine"]
    x[500, 2] += 1e4  # far beyond anything seen
    out = replay(model, x)
    r = out[500]
    assert r.likelihood == 1.0 and r.surprise is not None and r.surprise > 6
    for o in out[300:]:
        s = o.surprise
        if o.likelihood is not None and o.likelihood < 1 - 1e-9:
            assert s == pytest.approx(-np.log10(1 - o.likelihood), rel=1e-6)


@ENGINES
def test_a_lasting_change_becomes_normal_and_its_alarm_clears_as_adapted(
    model: StepModel, make: Callable[[StepModel], Engine]
) -> None:
    """A 5-minute stream moves to a new set point for good: one alarm, cleared within the horizon (7 days:
    2,016 readings) with the reason `adapted`, and no flag after that (with `scoring.flags = "channels"`
    the deviation channel flags it for ever: the test below)."""
    x = streams(4000, 6)["counts"]
    x[1000:, :] += 15.0
    out = replay(model, x, dt=300.0, engine=make(model))
    events = [(i, r.alarm_event.state, r.alarm_event.reason) for i, r in enumerate(out) if r.alarm_event]
    events = [e for e in events if e[0] >= BASELINE and (e[1] == "raised" or e[0] > 1000)]
    assert events[0][1] == "raised" and events[0][0] in range(1000, 1020), events
    cleared = [e for e in events if e[1] == "cleared"]
    assert cleared and cleared[0][2] == "adapted" and cleared[0][0] < 1000 + 2016
    assert not any(r.anomaly for r in out[cleared[0][0] :])


def test_a_raised_alarm_keeps_the_channels_flags_while_the_fault_stays_unusual(model: StepModel) -> None:
    """The gate's hysteresis (`scoring.surprise_gate_raised`): a 4σ fault of 300 five-minute readings. The
    stream's own law learns it within a few dozen readings, so with one gate (10⁻²) its flags stop long
    before it ends; while its alarm is raised the looser gate (10⁻¹) keeps them for the fault's length.
    Before the fault nothing changes (no alarm is raised there). Without the time-of-day statistic, whose
    share of the Bonferroni factor (5 statistics instead of 4) moves this fault's p from just below the
    looser gate to about it: the defaults' figure is the next test's."""
    x = streams(1800, 1)["counts"]
    x[1200:1500, 1] += 4.0

    def flags(hold: float) -> list[bool]:
        engine = Engine(model, scoring=ScoringConfig(surprise_gate_raised=hold, daily_bins=0))
        return [r.anomaly for r in replay(model, x, dt=300.0, engine=engine)]

    held, single = flags(ScoringConfig().surprise_gate_raised), flags(0.0)
    assert ScoringConfig().surprise_gate_raised == 0.1
    assert held[:1200] == single[:1200]
    assert sum(single[1200:1500]) < 60 and sum(held[1200:1500]) > 270, (sum(single[1200:1500]), sum(held[1200:1500]))


def test_with_the_defaults_a_plant_fault_stays_flagged_through_its_first_hours(model: StepModel) -> None:
    """Issue 24: a plant fault stays flagged through its first hours. The same 4σ fault on one of three
    sensors, 300 five-minute readings, through the defaults (the time-of-day statistic on): every reading
    of its first 6 hours flagged, and most of the rest (measured: 196 of 300, 299 without the statistic)."""
    x = streams(1800, 1)["counts"]
    x[1200:1500, 1] += 4.0
    flags = [r.anomaly for r in replay(model, x, dt=300.0, engine=default_engine(model))]
    assert all(flags[1201 : 1200 + 72]) and sum(flags[1200:1500]) > 150, sum(flags[1200:1500])


def test_without_adaptation_the_channels_flag_a_lasting_change_for_ever(model: StepModel) -> None:
    """What `adaptive` changes: the same stream as above through `scoring.flags = "channels"`."""
    x = streams(4000, 6)["counts"]
    x[1000:, :] += 15.0
    out = replay(model, x, dt=300.0, engine=Engine(model, scoring=ScoringConfig(flags="channels")))
    assert np.mean([r.anomaly for r in out[3100:]]) > 0.9


def test_accept_takes_the_current_regime_as_normal_now(model: StepModel) -> None:
    engine = likelihood_engine(model)
    x = streams(1800, 7)["counts"]
    x[1000:, 0] += 15.0
    out = replay(model, x[:1010], engine=engine)
    assert out[-1].alarm
    known, event = engine.accept_stream("s")
    assert known and event is not None and (event.state, event.reason) == ("cleared", "accepted")
    assert engine.accept_stream("nobody") == (False, None)
    rest = [engine.process([Reading("s", T0 + i * 300.0, tuple(x[i]))])[0] for i in range(1010, 1800)]
    assert not any(r.anomaly or r.alarm for r in rest)  # type: ignore[union-attr]
    # The statistics learn again for `scoring.baseline` readings (the first after accept is the 0th).
    assert all(r.likelihood is None for r in rest[:BASELINE]) and rest[-1].likelihood is not None  # type: ignore[union-attr]
