"""One very rare flagged reading raises the alarm on its own (`alarm.raise_surprise`, issue 24: a single
extreme spike never raised an alarm at 5 of 10 flags); a rare reading no channel flags does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lstm.alarm import COLUMNS, AlarmPolicy


def events(policy: AlarmPolicy, readings: list[tuple[int, float]]) -> list[tuple[str, int]]:
    """(event, reading index) for each raise and clear of one stream; readings are (flag, surprise)."""
    cols = {name: np.broadcast_to(np.asarray(c.init, c.dtype), (1, *c.shape)).copy() for name, c in COLUMNS.items()}
    out = []
    for t, (flag, surprise) in enumerate(readings):
        raised, cleared = policy.update(
            cols, np.array([bool(flag)]), np.array([1.0]), np.array([float(t)]), None, np.array([surprise])
        )
        if raised[0] or cleared[0]:
            out.append(("raised" if raised[0] else "cleared", t))
    return out


QUIET = [(0, 0.3)] * 5


def test_a_single_flagged_reading_at_the_surprise_level_raises_at_once() -> None:
    assert events(AlarmPolicy(clear_after=3), [*QUIET, (1, 4.0), *QUIET]) == [("raised", 5), ("cleared", 8)]


def test_a_flag_less_surprising_waits_for_raise_n() -> None:
    assert events(AlarmPolicy(clear_after=3), [*QUIET, (1, 3.9), *QUIET]) == []


def test_an_unflagged_reading_never_raises_however_surprising() -> None:
    """The flag decides what is an anomaly (with `adaptive` flags, a channel agrees); surprise only how fast."""
    assert events(AlarmPolicy(), [*QUIET, (0, 12.0), *QUIET]) == []


def test_off_at_zero() -> None:
    assert events(AlarmPolicy(raise_surprise=0.0), [*QUIET, (1, 12.0), *QUIET]) == []


def test_a_raised_alarm_is_not_raised_again_by_a_second_spike() -> None:
    assert events(AlarmPolicy(clear_after=10), [*QUIET, (1, 6.0), (0, 0.3), (1, 6.0), *QUIET]) == [("raised", 5)]


def test_a_negative_level_is_refused() -> None:
    with pytest.raises(ValueError, match="raise_surprise"):
        AlarmPolicy(raise_surprise=-1.0)


def test_the_settings_reach_the_policy_and_the_scoring() -> None:
    from edge_lstm.service.config.alarm import AlarmSettings
    from edge_lstm.service.config.scoring import ScoringSettings

    assert AlarmSettings(raise_surprise=6.0).policy().raise_surprise == 6.0
    config = ScoringSettings(flags="channels", surprise_gate=0.05).config()
    assert (config.flags, config.surprise_gate) == ("channels", 0.05)
    assert (ScoringSettings().config().flags, AlarmSettings().policy().raise_surprise) == ("adaptive", 4.0)


@pytest.mark.parametrize("gate", [0.0, 1.0])
def test_a_gate_outside_0_1_is_refused(gate: float) -> None:
    from edge_lstm.scoring import ScoringConfig

    with pytest.raises(ValueError, match="surprise_gate"):
        ScoringConfig(surprise_gate=gate)


@pytest.mark.parametrize("raised", [0.005, 1.0, -0.1])
def test_a_gate_while_raised_below_the_gate_or_outside_0_1_is_refused(raised: float) -> None:
    from edge_lstm.scoring import ScoringConfig

    with pytest.raises(ValueError, match="surprise_gate_raised"):
        ScoringConfig(surprise_gate=0.01, surprise_gate_raised=raised)
    assert ScoringConfig(surprise_gate_raised=0.0).surprise_gate_raised == 0.0  # 0: one gate


def test_the_gate_while_raised_reaches_the_scoring() -> None:
    from edge_lstm.service.config.scoring import ScoringSettings

    assert ScoringSettings(surprise_gate_raised=0.05).config().surprise_gate_raised == 0.05
    assert ScoringSettings().config().surprise_gate_raised == 0.1


def test_a_latched_alarm_stays_raised_until_accepted() -> None:
    """`alarm.latch`: however long the stream is quiet again, only `accept` clears it (test_surprise.py's
    accept test covers the engine's side for an unlatched alarm; here the policy never clears)."""
    assert events(AlarmPolicy(clear_after=3, latch=True), [*QUIET, (1, 6.0), *QUIET * 20]) == [("raised", 5)]


def test_a_latched_alarm_is_cleared_by_accept(tmp_path: Path) -> None:
    from support.models import make_step_model

    from edge_lstm import Engine, Reading, load_model

    model = load_model(make_step_model(tmp_path / "m.onnx", hidden=8, warmup_steps=2))
    engine = Engine(model, alarms=AlarmPolicy(clear_after=3, latch=True))
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (700, 3))
    x[600, 0] += 40.0  # a spike: raised at once
    out = [engine.process([Reading("s", 1e9 + i, tuple(row))])[0] for i, row in enumerate(x)]
    alarm = [bool(getattr(r, "alarm", False)) for r in out]
    assert alarm[600] and all(alarm[600:]), "a latched alarm stayed raised through 99 normal readings"
    known, event = engine.accept_stream("s")
    assert known and event is not None and (event.state, event.reason) == ("cleared", "accepted")
