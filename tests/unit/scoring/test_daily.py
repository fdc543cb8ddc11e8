"""The surprise channel's time-of-day statistic (`scoring.daily_bins`) through the engine and a real ONNX
step model: a daily pattern that breaks is surprising where the forecast follows it; a stream's first day
is scored exactly as without the statistic; the setting is validated."""

from __future__ import annotations

import numpy as np
import pytest
from support.models import make_step_model

from edge_lstm import Engine, Reading, load_model
from edge_lstm.ports import StepModel
from edge_lstm.result import Result
from edge_lstm.scoring import ScoringConfig

T0 = 1_700_006_400.0  # a UTC midnight
DAY = 288  # readings per day, one per 5 minutes


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> StepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", hidden=8, warmup_steps=2))


def square_days(days: int, seed: int) -> np.ndarray:
    """[days × 288, 3]: a daily square wave (80 from 08:00 to 16:00, 20 otherwise) with noise std 2."""
    rng = np.random.default_rng(seed)
    hour = (np.arange(days * DAY) % DAY) / 12.0
    level = np.where((hour >= 8) & (hour < 16), 80.0, 20.0)
    return level[:, None] + rng.normal(0, 2.0, (days * DAY, 3))


def replay(model: StepModel, x: np.ndarray, bins: int) -> list[Result]:
    engine = Engine(model, scoring=ScoringConfig(daily_bins=bins))
    return [engine.process([Reading("s", T0 + i * 300.0, tuple(row))])[0] for i, row in enumerate(x)]  # type: ignore[misc]


def surprise(out: list[Result]) -> np.ndarray:
    return np.asarray([r.surprise if r.surprise is not None else 0.0 for r in out])


def test_a_day_whose_peak_stays_low_is_surprising_with_the_time_of_day_statistic(model: StepModel) -> None:
    """Day 6 peaks at 40 instead of 80 (NAB's `art_daily_jumpsdown`): the forecast follows the lower
    level within a step or two, and 40 is a level the stream knows; the hours 08:00-16:00 do not."""
    x = square_days(7, 0)
    broken = slice(5 * DAY + 8 * 12, 5 * DAY + 16 * 12)
    x[broken] -= 40.0
    with_daily, without = surprise(replay(model, x, 24)), surprise(replay(model, x, 0))
    normal = slice(2 * DAY, 5 * DAY)  # the days before, with the statistic learned
    assert with_daily[broken].max() > 4.0 > with_daily[normal].max()
    assert with_daily[broken].max() > without[broken].max() + 1.0
    assert np.mean(with_daily[broken] > 2.0) > np.mean(without[broken] > 2.0) + 0.2


def test_a_stream_s_first_day_is_scored_as_without_the_statistic(model: StepModel) -> None:
    """No hour has been seen on an earlier day: the likelihood, the flags and the alarms are the same
    bytes as with `daily_bins = 0` (a 1 Hz machine's warm-up within the hour is not a daily pattern)."""
    x = square_days(1, 1)
    x[200:210] += 30.0
    a, b = replay(model, x, 24), replay(model, x, 0)
    assert [(r.likelihood, r.surprise, r.anomaly, r.alarm) for r in a] == [
        (r.likelihood, r.surprise, r.anomaly, r.alarm) for r in b
    ]
    assert any(r.anomaly for r in a)  # something to compare


@pytest.mark.parametrize("bins", [-1, 7, 97, 192])
def test_daily_bins_must_divide_the_day(bins: int) -> None:
    with pytest.raises(ValueError, match="daily_bins"):
        ScoringConfig(daily_bins=bins)


def test_daily_bins_0_turns_the_statistic_off(model: StepModel) -> None:
    engine = Engine(model, scoring=ScoringConfig(daily_bins=0))
    assert not any(k.startswith("surprise.d") for k in engine.scorer.columns)
    assert "surprise.dmu" in Engine(model).scorer.columns


def test_a_stream_restored_without_the_statistic_s_columns_starts_its_first_day_then(model: StepModel) -> None:
    """A checkpoint of an older version has no `surprise.d*` / `surprise.t0` columns: the restored stream,
    long past its baseline (every later round steady), starts from their init (t0 unknown) and gets the
    statistic a day later."""
    x = square_days(5, 2)
    x[4 * DAY + 8 * 12 : 4 * DAY + 16 * 12] -= 40.0  # day 5's peak stays low
    engine = Engine(model, scoring=ScoringConfig(daily_bins=24))
    for i, row in enumerate(x[: 2 * DAY]):
        engine.process([Reading("s", T0 + i * 300.0, tuple(row))])
    row = engine.table.row("s")
    old = {k: v for k, v in row.columns.items() if not k.startswith(("surprise.d", "surprise.t0"))}
    restored = Engine(model, scoring=ScoringConfig(daily_bins=24))
    restored.table.restore(
        type(row)(row.stream, row.states, row.last_ts, row.steps, row.anomalies, row.prediction, old)
    )
    out: list[Result] = []
    for i, r in enumerate(x[2 * DAY :], 2 * DAY):
        result = restored.process([Reading("s", T0 + i * 300.0, tuple(r))])[0]
        assert isinstance(result, Result)
        out.append(result)
    s = surprise(out)
    day5 = slice(2 * DAY + 8 * 12, 2 * DAY + 16 * 12)  # `out` starts at day 3, when the row was restored
    assert s[day5].max() > 4.0
