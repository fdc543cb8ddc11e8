"""Log levels a systemd user expects (docs/operations.md, "Log levels"): a clean stop is info only,
a lost broker connection is a warning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
LOUD = ("warning", "error", "critical")


def test_a_clean_sigterm_logs_nothing_at_warning_or_above(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    publisher: Callable[[int], Publisher],
) -> None:
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    pub = publisher(broker.port)
    for i in range(20):
        pub.send("sensors/a", reading_payload(T0 + i, [0.1 * i, 0.2, 0.3]))
    pub.flush()
    d.wait_event("stats", where=lambda e: e.get("results", 0) >= 20)
    assert d.terminate() == 0
    events = d.events()
    assert [e["event"] for e in events if e["event"] == "mqtt_disconnected"] == ["mqtt_disconnected"]
    assert [e for e in events if e.get("level") in LOUD] == []
    assert any(e["event"] == "stopped" for e in events)


def test_a_lost_connection_is_a_warning(
    broker: PrivateBroker, step_model_path: Path, tmp_path: Path, run_daemon: Callable[..., DaemonProcess]
) -> None:
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state"))
    d.wait_ready()
    broker.restart(down_s=0.5, kill=True)
    lost = d.wait_event("mqtt_disconnected")
    assert lost["level"] == "warning"
    d.wait_event("mqtt_subscribed", count=2)
    assert d.terminate() == 0
    stops = [e for e in d.events() if e["event"] == "mqtt_disconnected"]
    assert [e["level"] for e in stops] == ["warning", "info"]
