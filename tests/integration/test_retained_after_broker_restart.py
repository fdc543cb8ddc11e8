"""Retained state after a broker restart without persistence (issue 20): the broker forgets every
retained message; the daemon publishes `status` and its raised alarms again on reconnecting, so a
dashboard that connects afterwards still sees the alarm `raised`. Real mosquitto, real daemon process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher, retained
from support.traffic import reading_payload

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_raised_alarm_is_retained_again_after_a_broker_restart_without_persistence(
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    from edge_lstm.demo.broker import BrokerUnavailable, PrivateBroker

    try:
        broker = PrivateBroker(persistence=False).start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))
    try:
        cfg = daemon_config(
            broker,
            step_model_path,
            tmp_path / "state",
            scoring={"baseline": 40},
            alarm={"raise_n": 3, "raise_window": 5, "clear_after": 1000},
        )
        d = run_daemon(cfg)
        d.wait_ready()
        pub = publisher(broker.port)
        rng = np.random.default_rng(0)
        for t in range(80):
            a, b, c = rng.normal(0, 0.1, 3)
            pub.send("sensors/pump", reading_payload(T0 + t, [1 + a, 2 + b + (5.0 if t >= 60 else 0.0), 3 + c]))
        pub.flush()
        col = collector(broker.port, ["edge-lstm/alarms/#"])
        col.wait_for(lambda c: c.snapshot("edge-lstm/alarms/pump"), what="the raised alarm")
        assert json.loads(col.snapshot()[-1][1])["state"] == "raised"

        broker.restart(down_s=0.5)  # no persistence: every retained message is gone
        d.wait_event("mqtt_subscribed", count=2)
        got = retained(broker.port, "edge-lstm/alarms/pump", timeout=10)
        assert got is not None and json.loads(got)["state"] == "raised"
        status = retained(broker.port, "edge-lstm/status", timeout=10)
        assert status is not None and b"online" in status
        assert d.terminate() == 0
    finally:
        broker.stop()
