"""Home Assistant's per-stream state: the payload (unknown while warming up) and the rate limit."""

from __future__ import annotations

import json

from edge_lstm.result import Result
from edge_lstm.service.ha_states import StateThrottle, snapshot, stream_state
from edge_lstm.service.logs import LastProblem

MODEL = {"name": "m", "version": "1"}


def result(ts: float, *, warming_up: bool = False, alarm: bool = False) -> Result:
    return Result("s", ts, 0.25, False, 1.0, warming_up, MODEL, likelihood=0.5, alarm=alarm, deviation=float("nan"))


def test_warm_up_renders_null_and_scored_readings_numbers() -> None:
    assert json.loads(stream_state(snapshot(result(1.0, warming_up=True)))) == {
        "score": None, "likelihood": None, "deviation": None, "alarm": "OFF", "warming_up": True, "ts": 1.0
    }  # fmt: skip
    doc = json.loads(stream_state(snapshot(result(2.0, alarm=True))))
    assert (doc["score"], doc["likelihood"], doc["deviation"], doc["alarm"]) == (0.25, 0.5, None, "ON")


def test_at_most_one_state_per_interval_and_the_latest_one_follows() -> None:
    t: StateThrottle[int] = StateThrottle(10.0, max_streams=4)
    sent = [i for i in range(100) if t.offer("s", False, i, now=i * 0.1)]  # 10 Hz for 10 s
    assert sent == [0]
    assert t.due(9.9) == []
    assert t.due(10.0) == [("s", 99)]  # the latest, once the interval has passed
    assert t.due(30.0) == []  # nothing new held back: nothing sent
    assert t.offer("s", False, 100, now=30.0)  # quiet for longer than the interval: at once


def test_alarm_changes_go_at_once() -> None:
    t: StateThrottle[int] = StateThrottle(10.0, max_streams=4)
    assert t.offer("s", False, 0, now=0.0)
    assert not t.offer("s", False, 1, now=0.1)
    assert t.offer("s", True, 2, now=0.2)  # raised
    assert not t.offer("s", True, 3, now=0.3)
    assert t.offer("s", False, 4, now=0.4)  # cleared
    assert t.due(10.0) == []  # the scheduled one waits a full interval after the last state sent
    assert not t.offer("s", False, 5, now=10.1)
    assert t.due(10.4) == [("s", 5)]


def test_streams_are_independent_and_bounded() -> None:
    t: StateThrottle[int] = StateThrottle(10.0, max_streams=2)
    assert t.offer("a", False, 0, 0.0) and t.offer("b", False, 0, 0.0)
    assert not t.offer("a", False, 1, 1.0)
    assert t.offer("c", False, 0, 1.0)  # "b" (least recently offered) is forgotten
    assert t.offer("b", False, 1, 2.0)  # so its next state goes at once
    t.forget("a")
    assert t.due(100.0) == []  # a forgotten stream's held-back state is dropped


def test_last_problem_is_the_last_warning_or_error_logged() -> None:
    """The daemon device's "Last error" (the stats' last_error): set by the log pipeline's processor."""
    lp = LastProblem()
    lp(None, "info", {"event": "stats", "level": "info", "timestamp": "2026-12-07T14:00:00.123456Z"})
    assert lp.text == ""
    lp(None, "warning", {"event": "publish_refused", "level": "warning", "timestamp": "2026-12-07T14:03:05.5Z"})
    lp(None, "info", {"event": "stats", "level": "info", "timestamp": "2026-12-07T14:04:00Z"})
    assert lp.text == "2026-12-07T14:03:05Z warning publish_refused"


def test_release_sends_held_back_states_now_and_the_next_ones_at_once() -> None:
    """After the broker lost its retained states: nothing waits for its interval."""
    t: StateThrottle[int] = StateThrottle(10.0, max_streams=4)
    assert t.offer("a", False, 0, 0.0) and t.offer("b", False, 0, 0.0)
    assert not t.offer("a", False, 1, 1.0)  # held back
    t.release()
    assert t.due(1.1) == [("a", 1)]
    assert t.offer("b", False, 1, 1.2)  # at once
    assert not t.offer("b", False, 2, 1.3)  # and then limited again
    assert t.due(5.0) == []


def test_a_reloaded_model_is_announced_again_with_each_streams_next_result() -> None:
    from edge_lstm.onnx_model import load_model
    from edge_lstm.service.config import load_settings
    from edge_lstm.service.ha_bridge import HomeAssistantBridge

    meta = load_model(None).meta
    bridge = HomeAssistantBridge(load_settings(None, homeassistant={"enabled": True}), meta, 10)
    configs = [t for t, p, _ in bridge.on_result(result(1.0), 0.0) if t.startswith("homeassistant/") and p]
    assert len(configs) == 4 and not [t for t, _, _ in bridge.on_result(result(2.0), 1.0) if t in configs]
    bridge.model_changed(meta.model_copy(update={"version": "9.9"}))
    again = {t: json.loads(p) for t, p, _ in bridge.on_result(result(3.0), 2.0) if t.startswith("homeassistant/") and p}
    assert sorted(again) == sorted(configs) and all(c["device"]["sw_version"] == "9.9" for c in again.values())
