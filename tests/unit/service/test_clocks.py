"""Clocks the way a Pi has them (issue 20), through the real Daemon on a fake link and a fake clock
whose wall time can step both ways (tests/support/fakes.py). Sensors days ahead of the daemon are
scored, in order, in epoch seconds, milliseconds and ISO 8601; one bogus reading a year ahead is
rejected and blocks nothing, also across a restart; daemon-stamped readings never go backwards; a
forward wall step evicts no stream as idle."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.fakes import FakeClock, FakeNotifier, LinkFactory

from edge_lstm.onnx_model import load_model
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon

DAY = 86_400.0


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)


def make(
    step_model_path: Path, tmp_path: Path, clock: FakeClock | None = None, **engine: Any
) -> tuple[Daemon, Any, FakeClock]:
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path / "state"),
        checkpoint={"enabled": True, "interval_s": 300},
        log={"stats_interval_s": 0},
        engine=engine,
    )
    factory, clock = LinkFactory(), clock or FakeClock()
    d = Daemon(settings, load_model(step_model_path), notifier=FakeNotifier(), link_factory=factory, clock=clock)
    d.start()
    return d, factory.link, clock


def send(d: Daemon, link: Any, clock: FakeClock, stream: str, ts: Any = None) -> None:
    doc: dict[str, Any] = {"values": [1.0, 2.0, 3.0]}
    if ts is not None:
        doc["ts"] = ts
    link.deliver(f"sensors/{stream}", json.dumps(doc).encode(), arrival=clock.time())
    d.iteration(0.0)
    clock.advance(1.0)


def scored(link: Any, stream: str) -> list[float]:
    return [json.loads(s.payload)["ts"] for s in link.results(f"edge-lstm/scores/{stream}")]


FORMS: dict[str, Callable[[float], Any]] = {
    "epoch_s": lambda t: t,
    "epoch_ms": lambda t: int(t * 1000),
    "iso": lambda t: datetime.fromtimestamp(t, UTC).isoformat(),
}


def test_sensors_two_days_ahead_are_scored_in_order(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock = make(step_model_path, tmp_path)
    sent: dict[str, list[float]] = {k: [] for k in FORMS}
    for i in range(20):
        for form, encode in FORMS.items():
            t = float(int(clock.time() + 2 * DAY)) + i  # whole seconds: ms and ISO carry them exactly
            sent[form].append(t)
            send(d, link, clock, f"site-{form}", encode(t))
    for form in FORMS:
        got = scored(link, f"site-{form}")
        assert got == sent[form][-len(got) :] and len(got) >= 18, form  # in order, at most 2 held
    assert d.engine.stats.rejected.get("out_of_order", 0) == 0
    d.shutdown()


def test_one_bogus_reading_a_year_ahead_blocks_nothing_also_after_a_restart(
    step_model_path: Path, tmp_path: Path
) -> None:
    d, link, clock = make(step_model_path, tmp_path)
    for _ in range(5):
        send(d, link, clock, "pump", clock.time())
    send(d, link, clock, "pump", clock.time() + 365 * DAY)  # bogus
    for _ in range(5):
        send(d, link, clock, "pump", clock.time())
    assert len(scored(link, "pump")) == 10 and d.engine.stats.rejected["ts_in_future"] == 1
    send(d, link, clock, "pump", clock.time() + 365 * DAY)  # bogus again, just before a restart
    d.shutdown()
    d, link, clock = make(step_model_path, tmp_path, clock)
    for _ in range(5):
        send(d, link, clock, "pump", clock.time())
    assert len(scored(link, "pump")) == 5  # the stream carries on after the restart
    assert d.engine.table.row("pump").steps == 15
    d.shutdown()


def test_bogus_readings_between_good_ones_never_move_the_streams_clock(step_model_path: Path, tmp_path: Path) -> None:
    """Bogus far-future readings interleaved with good ones are never 'consecutive': each good reading
    ends the run, so the stream's clock never jumps (it did: the third bogus reading was admitted)."""
    d, link, clock = make(step_model_path, tmp_path)
    for i in range(6):
        send(d, link, clock, "pump", clock.time())
        send(d, link, clock, "pump", clock.time() + 365 * DAY + i)  # bogus, a little later each time
    assert len(scored(link, "pump")) == 6 and d.engine.stats.rejected["ts_in_future"] == 6
    d.shutdown()


def test_a_sensor_clock_that_jumps_ahead_is_followed_after_a_few_readings(
    step_model_path: Path, tmp_path: Path
) -> None:
    d, link, clock = make(step_model_path, tmp_path)
    for _ in range(3):
        send(d, link, clock, "pump", clock.time())
    for _ in range(6):
        send(d, link, clock, "pump", clock.time() + 2 * DAY)
    assert len(scored(link, "pump")) == 3 + 6 - 2  # two held, then the new clock is followed
    d.shutdown()


@pytest.mark.parametrize("step", [-3600.0, +2 * DAY])
def test_daemon_stamped_readings_never_go_backwards(step_model_path: Path, tmp_path: Path, step: float) -> None:
    d, link, clock = make(step_model_path, tmp_path)
    for _ in range(5):
        send(d, link, clock, "pump")  # no ts: stamped on arrival
    clock.epoch += step  # the wall clock steps (NTP, an operator, no RTC)
    for _ in range(5):
        send(d, link, clock, "pump")
    got = scored(link, "pump")
    assert len(got) == 10 and got == sorted(got) and len(set(got)) == 10
    assert d.engine.stats.rejected.get("out_of_order", 0) == 0
    d.shutdown()


def test_a_forward_wall_step_evicts_no_stream_as_idle(step_model_path: Path, tmp_path: Path) -> None:
    d, link, clock = make(step_model_path, tmp_path, idle_timeout_s=600)
    for s in ("a", "b"):
        send(d, link, clock, s)
    clock.epoch += 2 * DAY  # NTP's first sync on a Pi that booted without an RTC
    for _ in range(30):
        clock.advance(10.0)
        d.iteration(0.0)
    assert d.engine.stats.evicted == 0 and len(d.engine.table) == 2
    for _ in range(70):  # 700 s of monotonic silence: now they are idle
        clock.advance(10.0)
        d.iteration(0.0)
    assert len(d.engine.table) == 0
    d.shutdown()
