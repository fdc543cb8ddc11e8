"""The daemon without a broker: batching, in-order acks, checkpoint policy and housekeeping timers,
through a fake link and a fake clock (tests/support/fakes.py). The same Daemon class `edge-lstm run`
uses; only the ports are doubles."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from support.fakes import FakeClock, FakeNotifier, LinkFactory

from edge_lstm.durable.spill import SqliteSpill
from edge_lstm.durable.store import DurableState, StateDirBusy
from edge_lstm.hints import HINTS
from edge_lstm.onnx_model import load_model
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon

T0 = 1_764_000_000.0


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)


def make_daemon(
    step_model_path: Path,
    tmp_path: Path,
    *,
    auto_complete: bool = True,
    checkpoint_interval_s: float | None = None,
    **sections: Any,
) -> tuple[Daemon, Any, FakeClock, FakeNotifier]:
    """A started daemon on a fake link and clock; durable state only with `checkpoint_interval_s`."""
    sections.setdefault("log", {"stats_interval_s": 0})
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path / "state"),
        checkpoint={"enabled": checkpoint_interval_s is not None, "interval_s": checkpoint_interval_s or 300},
        **sections,
    )
    factory, clock, notifier = LinkFactory(auto_complete=auto_complete), FakeClock(), FakeNotifier()
    d = Daemon(settings, load_model(step_model_path), notifier=notifier, link_factory=factory, clock=clock)
    d.start()
    assert factory.link is not None
    return d, factory.link, clock, notifier


def reading(ts: float, *values: float) -> bytes:
    return json.dumps({"ts": ts, "values": list(values or (1.0, 2.0, 3.0))}).encode()


def test_a_batch_is_stepped_once_per_round_and_published_in_order(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, notifier = make_daemon(step_model_path, tmp_path)
    for step in range(2):
        for s in ("a", "b", "c"):
            link.deliver(f"sensors/{s}", reading(T0 + step))
    d.iteration(0.01)
    results = [json.loads(s.payload) for s in link.results()]
    assert [(r["stream"], r["ts"]) for r in results] == [(s, T0 + step) for step in range(2) for s in ("a", "b", "c")]
    assert [s.topic for s in link.results()][:3] == ["edge-lstm/scores/a", "edge-lstm/scores/b", "edge-lstm/scores/c"]
    assert d.engine.stats.model_calls == 2  # two rounds: each stream once per model call
    assert [mid for mid, _ in link.acked] == [1, 2, 3, 4, 5, 6]
    assert notifier.sent.count("READY=1") == 1


def test_acks_wait_for_the_handover_and_keep_arrival_order(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, auto_complete=False)
    for k in range(3):
        link.deliver(f"sensors/s{k}", reading(T0))
    d.iteration(0.01)
    assert len(link.results()) == 3 and link.acked == []
    first, second, third = link.results()
    link.complete(second, third)
    d.iteration(0.01)
    assert link.acked == []  # the first is not handed over yet: later ones wait for it
    link.complete(first)
    d.iteration(0.01)
    assert link.acked == [(1, 1), (2, 1), (3, 1)]
    assert d.stats()["unacked"] == 0 and d.stats()["max_outstanding"] == 3


def test_rejections_are_published_counted_and_acked(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path)  # the errors topic is on by default
    link.deliver("sensors/x", b"not json")
    link.deliver("other/topic/x", reading(T0))
    link.deliver("sensors/x", reading(T0))
    d.iteration(0.01)
    errors = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/errors"]
    assert [e["reason"] for e in errors] == ["not_json", "bad_stream"]
    assert errors[0] == {
        "stream": "x",
        "reason": "not_json",
        "detail": errors[0]["detail"],
        "topic": "sensors/x",
        "hint": HINTS["not_json"],
    }
    assert len(link.results()) == 1
    assert [mid for mid, _ in link.acked] == [1, 2, 3]
    assert d.stats()["rejected"] == {"not_json": 1, "bad_stream": 1}


def test_rejections_published_at_the_log_rate_per_reason(step_model_path: Path, tmp_path: Path) -> None:
    """A flood of one bad reason publishes `burst` of them per interval; other reasons keep theirs."""
    d, link, clock, _ = make_daemon(
        step_model_path, tmp_path, log={"stats_interval_s": 0, "rejections_burst": 2, "rejections_interval_s": 10}
    )
    for _ in range(5):
        link.deliver("sensors/x", b"not json")
    link.deliver("sensors/x", b"[1]")
    d.iteration(0.01)
    reasons = [json.loads(s.payload)["reason"] for s in link.sent if s.topic == "edge-lstm/errors"]
    assert reasons == ["not_json", "not_json", "bad_shape"]
    assert [mid for mid, _ in link.acked] == [1, 2, 3, 4, 5, 6]  # suppressed ones are acked all the same
    assert d.stats()["rejected"] == {"not_json": 5, "bad_shape": 1}
    clock.advance(11)
    link.deliver("sensors/x", b"not json")
    d.iteration(0.01)
    assert sum(s.topic == "edge-lstm/errors" for s in link.sent) == 4  # a new interval


def test_messages_of_an_earlier_connection_are_not_acked(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, auto_complete=False)
    link.deliver("sensors/a", reading(T0))
    d.iteration(0.01)
    link.disconnect()
    link.connect()  # the broker will redeliver it on this connection; acking the old mid could ack another
    link.complete()
    d.iteration(0.01)
    assert link.acked == []
    assert d.counters.not_acked_old_connection == 1


def test_qos0_readings_need_no_ack(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path)
    link.deliver("sensors/a", reading(T0), qos=0)
    d.iteration(0.01)
    assert len(link.results()) == 1 and link.acked == []


def test_a_due_checkpoint_pauses_intake_until_everything_is_acked(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, auto_complete=False, checkpoint_interval_s=60)
    assert d.checkpoints is not None and d.durable is not None
    taken = d.durable.checkpoints  # type: ignore[attr-defined]
    link.deliver("sensors/a", reading(T0))
    d.iteration(0.01)
    clock.advance(61)  # a checkpoint is due, and one result is not yet taken by the broker
    link.deliver("sensors/a", reading(T0 + 1))
    d.iteration(0.01)
    assert len(link.results()) == 1, "intake must pause while a checkpoint waits for acks"
    link.complete()
    d.iteration(0.01)  # acked; the next iteration takes the checkpoint, then intake resumes
    d.iteration(0.01)
    assert d.durable.checkpoints == taken + 1  # type: ignore[attr-defined]
    assert len(link.results()) == 2


def test_a_checkpoint_is_postponed_when_the_broker_takes_nothing(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, auto_complete=False, checkpoint_interval_s=60)
    assert d.checkpoints is not None
    link.deliver("sensors/a", reading(T0))
    d.iteration(0.01)
    clock.advance(61)
    with structlog.testing.capture_logs() as logs:
        d.iteration(0.01)  # pause starts
        clock.advance(d.quiesce_timeout_s + 0.1)
        d.iteration(0.01)  # gives up: serving goes on
    assert any(e["event"] == "checkpoint_postponed" for e in logs)
    assert d.checkpoints.postponed == 1
    link.deliver("sensors/a", reading(T0 + 1))
    d.iteration(0.01)
    assert len(link.results()) == 2


def test_housekeeping_warns_of_a_stall_and_repairs_unsent_results(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, auto_complete=False)
    link.deliver("sensors/a", reading(T0))
    d.iteration(0.01)
    with structlog.testing.capture_logs() as logs:
        for _ in range(7):
            clock.advance(5.0)
            d.iteration(0.001)
    assert link.kicks >= 6  # every 5 s while results wait and the link is up
    stalled = [e for e in logs if e["event"] == "publish_stalled"]
    assert len(stalled) == 1 and stalled[0]["unacked"] == 1
    assert d.stats()["stalls"] == 1


def test_stats_are_logged_on_their_interval(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, notifier = make_daemon(step_model_path, tmp_path, log={"stats_interval_s": 60})
    with structlog.testing.capture_logs() as logs:
        d.iteration(0.001)
        clock.advance(59)
        d.iteration(0.001)
        assert not [e for e in logs if e["event"] == "stats"]
        clock.advance(2)
        d.iteration(0.001)
    stats = [e for e in logs if e["event"] == "stats"]
    assert len(stats) == 1 and stats[0]["connected"] is True
    assert any(s.startswith("STATUS=") for s in notifier.sent)


def test_idle_streams_are_evicted_by_event_time(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, engine={"idle_timeout_s": 30, "evicted": "drop"})
    now = clock.time()
    link.deliver("sensors/old", reading(now - 100))
    link.deliver("sensors/new", reading(now))
    d.iteration(0.01)
    clock.advance(11)  # the idle check runs every min(10 s, idle_timeout)
    d.iteration(0.001)
    assert "old" not in d.engine.table and "new" in d.engine.table


def test_shutdown_drains_the_inbox_and_closes_the_spill_store(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, notifier = make_daemon(step_model_path, tmp_path)
    link.deliver("sensors/a", reading(T0))
    link.deliver("sensors/b", reading(T0))
    assert d.spill is not None
    d.shutdown()
    assert len(link.results()) == 2 and len(link.acked) == 2
    assert link.closed and not link.accepting and "STOPPING=1" in notifier.sent
    with pytest.raises(Exception, match="closed"):
        d.spill.db.execute("SELECT 1")  # type: ignore[attr-defined]  # SpillStore.close() really closed the database


def test_the_daemon_is_complete_when_constructed_and_a_second_one_stops_there(
    step_model_path: Path, tmp_path: Path
) -> None:
    """One composition root (docs/architecture.md, "Where the daemon is wired"): `Daemon(...)` locks the
    state directory, opens the spill store, hands it to the engine and restores the durable state on
    them; nothing is attached later. A second daemon on the same directory stops at construction, before
    it opens anything there; the first one serves on, its evicted streams spilled and restored."""
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path / "state"),
        engine={"max_streams": 1},
        log={"stats_interval_s": 0},
    )
    model = load_model(step_model_path)
    factory = LinkFactory()
    d = Daemon(settings, model, notifier=FakeNotifier(), link_factory=factory, clock=FakeClock())
    assert isinstance(d.durable, DurableState) and isinstance(d.spill, SqliteSpill) and d.checkpoints is not None
    assert d.engine.spill is d.spill and d.durable.spill is d.spill and d.durable.engine is d.engine
    assert factory.link is None  # the link is made by start(), on the parts built here
    spilled_before = (tmp_path / "state" / "spill.db").stat().st_mtime_ns
    with pytest.raises(StateDirBusy):
        Daemon(settings, model, notifier=FakeNotifier(), link_factory=LinkFactory(), clock=FakeClock())
    assert (tmp_path / "state" / "spill.db").stat().st_mtime_ns == spilled_before  # untouched by the second
    d.start()
    link = factory.link
    assert link is not None
    for stream in ("a", "b", "a"):  # one row in the table: b evicts a (spilled), a comes back from the spill store
        link.deliver(f"sensors/{stream}", reading(T0 + len(link.results())))
        d.iteration(0.01)
    assert d.engine.stats.unspilled == 1 and d.engine.table.row("a").steps == 2
    d.shutdown()


def test_shutdown_reports_results_the_broker_never_took(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, auto_complete=False)
    link.deliver("sensors/a", reading(T0))
    d.iteration(0.01)
    link.disconnect()  # nothing more can be handed over: no drain wait
    with structlog.testing.capture_logs() as logs:
        d.shutdown()
    assert [e["count"] for e in logs if e["event"] == "shutdown_unacked"] == [1]
    assert link.acked == []


def test_run_returns_when_stopped(step_model_path: Path, tmp_path: Path) -> None:
    settings = load_settings(None, model=str(step_model_path), state_dir=str(tmp_path), checkpoint={"enabled": False})
    factory = LinkFactory()
    d = Daemon(settings, link_factory=factory, notifier=FakeNotifier())
    stop = threading.Event()
    t = threading.Thread(target=d.run, args=(stop,))
    t.start()
    assert d.ready.wait(10)
    stop.set()
    t.join(10)
    assert not t.is_alive() and factory.link is not None and factory.link.closed


def test_alarm_changes_are_published_retained_once(step_model_path: Path, tmp_path: Path) -> None:
    """A sustained fault after the stream's baseline: one retained `raised` on the alarm topic, the
    results carry `alarm: true` meanwhile, and one retained `cleared` after the quiet period."""
    d, link, _, _ = make_daemon(
        step_model_path, tmp_path, scoring={"baseline": 40}, alarm={"raise_n": 3, "raise_window": 5, "clear_after": 10}
    )
    rng = np.random.default_rng(0)
    t = 0
    for phase, n in (("normal", 60), ("fault", 40), ("normal", 200)):
        for _ in range(n):
            a, b, c = rng.normal(0, 0.1, 3)
            if phase == "fault":
                b += 5.0  # 50 sd on one feature
            link.deliver("sensors/pump", reading(T0 + t, 1 + a, 2 + b, 3 + c))
            t += 1
        d.iteration(0.01)
    alarms = [s for s in link.sent if s.topic == "edge-lstm/alarms/pump"]
    states = [json.loads(s.payload)["state"] for s in alarms]
    assert states == ["raised", "cleared"] and all(s.retain for s in alarms)
    raised = json.loads(alarms[0].payload)
    assert raised["stream"] == "pump" and T0 + 60 <= raised["since"] < T0 + 70 and raised["readings"] == 1
    results = [json.loads(s.payload) for s in link.results()]
    assert any(r["alarm"] for r in results[60:100]) and not any(r["alarm"] for r in results[:60])
    assert all(r["deviation"] is None for r in results[:39]) and results[45]["deviation"] is not None


def test_intake_stops_while_too_many_results_wait_for_their_puback(step_model_path: Path, tmp_path: Path) -> None:
    """paho's window is off (mqtt.py): the daemon bounds unacknowledged readings itself (max_unacked)."""
    d, link, _, _ = make_daemon(
        step_model_path,
        tmp_path,
        auto_complete=False,
        engine={"max_queue": 4, "max_batch": 2},
        mqtt={"max_inflight": 2},
    )
    assert d.max_unacked == 6
    for k in range(12):
        link.deliver(f"sensors/s{k}", reading(T0))
    for _ in range(10):
        d.iteration(0.01)
    assert len(d.ledger) == 6 and len(link.results()) == 6  # stopped at the bound, the rest waits
    assert d.unacked_pauses > 0
    link.complete()
    for _ in range(10):
        d.iteration(0.01)
        link.complete()
    assert len(link.acked) == 12 and not d.ledger


def test_stats_are_published_retained(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, log={"stats_interval_s": 10})
    link.deliver("sensors/a", reading(T0))
    link.deliver("sensors/b", b"junk")
    d.iteration(0.01)
    clock.advance(11)
    d.iteration(0.001)
    stats = [s for s in link.sent if s.topic == "edge-lstm/stats"]
    assert len(stats) == 1 and stats[0].retain
    doc = json.loads(stats[0].payload)
    assert doc["results"] == 1 and doc["rejected"] == {"not_json": 1} and doc["streams"] == 1
    assert doc["model"]["name"] == "test-model"
    assert doc["uptime_s"] >= 11 and doc["version"] and doc["mean_batch"] == 2.0
    for key in ("queue", "streams_spilled", "alarms_raised", "acked", "rate_per_s"):
        assert key in doc


def test_commands_reset_inspect_checkpoint_and_errors(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, checkpoint_interval_s=3600, commands={"enabled": True})
    for t in range(5):
        link.deliver("sensors/pump", reading(T0 + t))
    d.iteration(0.01)
    taken = d.durable.checkpoints  # type: ignore[union-attr]
    link.deliver("edge-lstm/command", b'{"op": "inspect", "stream": "pump"}')
    link.deliver("edge-lstm/command", b'{"op": "explode"}')
    link.deliver("edge-lstm/command", b'{"op": "reset", "stream": "pump"}')
    link.deliver("edge-lstm/command", b'{"op": "checkpoint"}')
    d.iteration(0.01)
    d.iteration(0.01)  # the requested checkpoint is taken once nothing awaits the broker
    replies = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/command/reply"]
    assert [(r["op"], r["ok"]) for r in replies] == [
        ("inspect", True),
        (None, False),
        ("reset", True),
        ("checkpoint", True),
    ]
    assert replies[0]["steps"] == 5 and replies[0]["alarm"]["raised"] is False
    assert "unknown op 'explode'" in replies[1]["error"]
    assert d.durable.checkpoints > taken  # type: ignore[union-attr]
    assert [mid for mid, _ in link.acked][-4:] == [6, 7, 8, 9]  # commands are acknowledged too
    link.deliver("sensors/pump", reading(T0 + 10))
    d.iteration(0.01)
    assert json.loads(link.results()[-1].payload)["warming_up"] is True  # reset: it starts fresh
    assert d.stats()["commands"] == 4
    link.deliver("edge-lstm/command", b'{"op": "reload"}')
    d.iteration(0.01)  # no reloader in this test: the request is logged as unavailable
    assert json.loads(link.sent[-1].payload)["op"] == "reload" and d.requested.reload


def test_accept_clears_a_raised_alarm_retained_with_its_reason(step_model_path: Path, tmp_path: Path) -> None:
    """`accept` during a lasting fault: its reply, a retained `cleared` alarm with reason `accepted`, and the
    new level is normal from then on (after the stream relearns for `scoring.baseline` readings)."""
    d, link, _, _ = make_daemon(
        step_model_path,
        tmp_path,
        scoring={"baseline": 40, "flags": "likelihood"},
        alarm={"raise_n": 1},
        commands={"enabled": True},
    )
    rng = np.random.default_rng(1)
    for t in range(80):
        a, b, c = rng.normal(0, 0.1, 3)
        link.deliver("sensors/pump", reading(T0 + t, 1 + a, 2 + b + (5.0 if t >= 60 else 0.0), 3 + c))
    d.iteration(0.01)
    link.deliver("edge-lstm/command", b'{"op": "accept", "stream": "pump"}')
    link.deliver("edge-lstm/command", b'{"op": "accept", "stream": "nobody"}')
    d.iteration(0.01)
    replies = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/command/reply"]
    assert [(r["op"], r["ok"]) for r in replies] == [("accept", True), ("accept", False)]
    alarms = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/alarms/pump"]
    events = [(a["state"], a.get("reason")) for a in alarms]
    assert events == [("raised", None), ("cleared", "accepted")]  # each change once
    for t in range(80, 200):
        a, b, c = rng.normal(0, 0.1, 3)
        link.deliver("sensors/pump", reading(T0 + t, 1 + a, 7 + b, 3 + c))
    d.iteration(0.01)
    assert not any(json.loads(s.payload)["alarm"] for s in link.results()[-120:])


def test_accept_turns_the_home_assistant_alarm_off_at_once(step_model_path: Path, tmp_path: Path) -> None:
    """Home Assistant's alarm entity follows `accept` at once, not with the stream's next reading, and a
    state held back from before the accept (alarm ON) is not sent after it."""
    d, link, clock, _ = make_daemon(
        step_model_path,
        tmp_path,
        scoring={"baseline": 40, "flags": "likelihood"},
        alarm={"raise_n": 1},
        commands={"enabled": True},
        homeassistant={"enabled": True},
    )
    rng = np.random.default_rng(1)
    for t in range(80):
        a, b, c = rng.normal(0, 0.1, 3)
        link.deliver("sensors/pump", reading(T0 + t, 1 + a, 2 + b + (5.0 if t >= 60 else 0.0), 3 + c))
    d.iteration(0.01)
    states = [json.loads(s.payload) for s in link.sent if s.topic == "edge-lstm/ha/pump"]
    assert states[-1]["alarm"] == "ON"
    before = len(link.sent)
    link.deliver("edge-lstm/command", b'{"op": "accept", "stream": "pump"}')
    d.iteration(0.01)
    after = [s for s in link.sent[before:] if s.topic == "edge-lstm/ha/pump"]
    assert [json.loads(s.payload)["alarm"] for s in after] == ["OFF"] and after[0].retain
    last_result = json.loads(link.results()[-1].payload)  # the latest reading's numbers, not the last sent
    assert json.loads(after[0].payload)["score"] == pytest.approx(last_result["score"], rel=1e-5)
    clock.advance(30.0)  # past `homeassistant.state_interval_s`: a state held back before would be due now
    d.iteration(0.01)
    later = [json.loads(s.payload)["alarm"] for s in link.sent[before:] if s.topic == "edge-lstm/ha/pump"]
    assert "ON" not in later


def test_commands_are_ignored_as_readings_when_disabled(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path)
    link.deliver("edge-lstm/command", b'{"op": "checkpoint"}')
    d.iteration(0.01)
    assert not [s for s in link.sent if s.topic.endswith("/reply")]
    assert d.stats()["rejected"] == {"bad_stream": 1}  # not our input pattern: a counted rejection


def test_home_assistant_configs_precede_each_state_and_states_are_rate_limited(
    step_model_path: Path, tmp_path: Path
) -> None:
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, homeassistant={"enabled": True})
    assert link.subscription == ["sensors/+", "homeassistant/status"]
    for t in range(30):  # 10 Hz for 3 s: the first state at once, the rest held back
        link.deliver("sensors/pump", reading(T0 + t / 10))
        d.iteration(0.01)
        clock.advance(0.1)
    ha = [s for s in link.sent if s.topic.startswith(("homeassistant/", "edge-lstm/ha/"))]
    assert all(s.retain for s in ha)
    stream = [s for s in ha if "pump" in s.topic]
    kinds = ["empty" if not s.payload else "state" if s.topic.startswith("edge-lstm/ha/") else "config" for s in stream]
    assert kinds == ["empty"] * 3 + ["config"] * 4 + ["state"]  # old topics cleared, configs, then one state
    state = json.loads(stream[-1].payload)
    assert state["alarm"] == "OFF" and state["score"] is None and state["warming_up"]  # HA: unknown, not 0.0
    assert len(link.results("edge-lstm/scores/pump")) == 30  # the result topic keeps every reading
    assert len([s for s in ha if s.topic.startswith("homeassistant/") and "/edge_lstm/daemon_" in s.topic]) == 8
    clock.advance(10.0)
    d.iteration(0.01)  # the interval has passed: the latest held-back state goes out, without a new reading
    (late,) = [s for s in link.sent[len(ha) :] if s.topic == "edge-lstm/ha/pump"] or [None]
    assert late is not None and json.loads(late.payload)["ts"] == T0 + 2.9
    link.deliver("homeassistant/status", b"online")  # Home Assistant restarted: announce again
    d.iteration(0.01)
    again = [s for s in link.sent if s.topic.startswith("homeassistant/") and s.payload]
    assert len(again) == 2 * (8 + 4)  # the daemon's and the stream's configs, twice; no more empties


def test_home_assistant_configs_again_when_the_broker_lost_its_state(step_model_path: Path, tmp_path: Path) -> None:
    """A reconnection without the broker's session (restarted without persistence: its retained
    messages are gone): every config again, and each stream's next state at once."""
    d, link, clock, _ = make_daemon(step_model_path, tmp_path, homeassistant={"enabled": True})
    link.deliver("sensors/pump", reading(T0))
    d.iteration(0.01)

    def configs() -> int:
        return len([s for s in link.sent if s.topic.startswith("homeassistant/") and s.payload])

    def states() -> int:
        return len(link.results("edge-lstm/ha/pump"))

    assert (configs(), states()) == (8 + 4, 1)
    link.session_present = True  # the broker kept the session: nothing again
    link.disconnect()
    link.connect()
    link.deliver("sensors/pump", reading(T0 + 1))
    d.iteration(0.01)
    assert (configs(), states()) == (8 + 4, 1)  # and the state waits for its interval
    link.session_present = False
    link.disconnect()
    link.connect()
    link.deliver("sensors/pump", reading(T0 + 2))
    d.iteration(0.01)
    assert (configs(), states()) == (2 * (8 + 4), 2)


def test_remove_command_clears_the_stream_in_home_assistant(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, homeassistant={"enabled": True}, commands={"enabled": True})
    link.deliver("sensors/pump", reading(T0))
    d.iteration(0.01)
    configs = {s.topic for s in link.sent if s.topic.startswith("homeassistant/") and "pump" in s.topic and s.payload}
    link.deliver("edge-lstm/command", b'{"op": "remove", "stream": "pump"}')
    d.iteration(0.01)
    cleared = {s.topic for s in link.sent if not s.payload and s.retain}
    assert configs | {"edge-lstm/ha/pump", "edge-lstm/alarms/pump"} <= cleared
    assert json.loads(link.results("edge-lstm/command/reply")[-1].payload) == {
        "op": "remove",
        "ok": True,
        "stream": "pump",
        "known": True,
    }
    assert "pump" not in d.engine.table


def test_idle_eviction_removes_the_stream_from_home_assistant_when_asked(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock, _ = make_daemon(
        step_model_path,
        tmp_path,
        homeassistant={"enabled": True, "remove_on_evict": True},
        engine={"idle_timeout_s": 5},
    )
    link.deliver("sensors/pump", reading(clock.time()))
    d.iteration(0.01)
    assert not [s for s in link.sent if s.topic == "edge-lstm/ha/pump" and not s.payload]
    clock.advance(30.0)
    d.iteration(0.01)
    assert [s for s in link.sent if s.topic == "edge-lstm/ha/pump" and not s.payload and s.retain]
    assert (
        len([s for s in link.sent if s.topic.startswith("homeassistant/") and "pump" in s.topic and not s.payload])
        == 3 + 4
    )


def test_a_v5_command_is_answered_on_its_response_topic(step_model_path: Path, tmp_path: Path) -> None:
    d, link, _, _ = make_daemon(step_model_path, tmp_path, commands={"enabled": True})
    link.deliver("edge-lstm/command", b'{"op": "checkpoint"}', response_topic="ops/replies/7", correlation=b"c-42")
    d.iteration(0.01)
    (answer,) = [s for s in link.sent if s.topic == "ops/replies/7"]
    assert answer.correlation == b"c-42" and json.loads(answer.payload)["op"] == "checkpoint"


def test_prometheus_metrics_endpoint(step_model_path: Path, tmp_path: Path) -> None:
    """`[metrics] port`: /metrics serves the daemon's counters with Prometheus names."""
    pytest.importorskip("prometheus_client", reason="needs the metrics extra")
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d, link, _, _ = make_daemon(step_model_path, tmp_path, metrics={"port": port})
    link.deliver("sensors/a", reading(T0))
    link.deliver("sensors/a", b"junk")
    d.iteration(0.01)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "edge_lstm_results_total 1.0" in text
    assert 'edge_lstm_rejected_total{reason="not_json"} 1.0' in text
    assert "edge_lstm_streams 1.0" in text and "edge_lstm_connected 1.0" in text
    d.shutdown()


def test_raised_alarms_are_published_again_only_when_the_broker_kept_no_session(
    step_model_path: Path, tmp_path: Path
) -> None:
    """A kept session keeps the retained alarm (and resends one in flight): publishing it again would
    double the `raised` event. A lost session (broker restarted without persistence): published again."""
    d, link, _, _ = make_daemon(
        step_model_path, tmp_path, scoring={"baseline": 40, "flags": "likelihood"}, alarm={"raise_n": 1}
    )
    rng = np.random.default_rng(1)
    for t in range(80):
        a, b, c = rng.normal(0, 0.1, 3)
        link.deliver("sensors/pump", reading(T0 + t, 1 + a, 2 + b + (5.0 if t >= 60 else 0.0), 3 + c))
    d.iteration(0.01)

    def raised() -> int:
        return sum(json.loads(s.payload)["state"] == "raised" for s in link.sent if s.topic == "edge-lstm/alarms/pump")

    assert raised() == 1
    link.session_present = True
    link.disconnect()
    link.connect()
    d.iteration(0.01)
    assert raised() == 1
    link.session_present = False
    link.disconnect()
    link.connect()
    d.iteration(0.01)
    assert raised() == 2


def test_a_home_assistant_bug_is_contained_and_scoring_goes_on(
    step_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the HA bridge raises (per result or per cycle) is logged and counted; every reading still
    gets its result and its ack (an exception out of the worker is a restart loop under systemd)."""
    d, link, _, _ = make_daemon(step_model_path, tmp_path, homeassistant={"enabled": True})
    bridge = d.control.ha
    assert bridge is not None

    def broken(*_: object) -> list[object]:
        raise KeyError("a bug no input should reach")

    monkeypatch.setattr(bridge, "_announce", broken)
    monkeypatch.setattr(bridge, "due", broken)
    mids = [link.deliver("sensors/pump", reading(T0 + t)) for t in range(3)]
    d.iteration(0.01)
    d.iteration(0.01)
    assert len(link.results("edge-lstm/scores/pump")) == 3 and [m for m, _ in link.acked] == mids
    assert bridge.failures >= 4  # three results, at least one cycle
