"""Sensor clocks against a real mosquitto and the daemon process (issue 20): sensors 2 days ahead of the
daemon's clock, in epoch seconds, epoch milliseconds and ISO 8601, are scored in order (each stream
loses its first 2 readings while its clock is confirmed); a bogus reading a year ahead is rejected and
blocks nothing, also after a restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

DAY = 86_400.0


def test_sensors_ahead_and_a_bogus_reading(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    col = collector(broker.port, ["edge-lstm/scores/#"])
    pub = publisher(broker.port)
    ahead = float(int(time.time() + 2 * DAY))
    forms: dict[str, Callable[[float], object]] = {
        "epoch-s": lambda t: t,
        "epoch-ms": lambda t: int(t * 1000),
        "iso": lambda t: datetime.fromtimestamp(t, UTC).isoformat(),
    }
    for i in range(10):
        for name, form in forms.items():
            pub.send(f"sensors/{name}", reading_payload(form(ahead + i), [0.1 * i, 1.0, 2.0]))
    now = float(int(time.time()))
    for i in range(10):
        ts = now + i + (365 * DAY if i == 4 else 0.0)  # one bogus reading a year ahead
        pub.send("sensors/pump", reading_payload(ts, [0.1 * i, 1.0, 2.0]))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 3 * 8 + 9)
    for name in forms:
        got = [r["ts"] for r in col.json(f"edge-lstm/scores/{name}")]
        assert got == [ahead + i for i in range(2, 10)], name  # in order, the first two held
    assert [r["ts"] for r in col.json("edge-lstm/scores/pump")] == [now + i for i in range(10) if i != 4]

    assert d.terminate() == 0
    d.start()  # the same daemon after a restart: the bogus reading left no trace
    d.wait_ready()
    pub.send("sensors/pump", reading_payload(now + 10, [1.0, 1.0, 2.0]))
    pub.send("sensors/epoch-s", reading_payload(ahead + 10, [1.0, 1.0, 2.0]))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 3 * 8 + 9 + 2)
    assert col.json("edge-lstm/scores/pump")[-1]["ts"] == now + 10
    assert col.json("edge-lstm/scores/epoch-s")[-1]["ts"] == ahead + 10  # followed at once after the restart
    assert d.terminate() == 0
