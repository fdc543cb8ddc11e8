"""Persistent session and faults: readings sent while the daemon is down, broker restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_readings_queued_while_down_are_all_scored(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    """clean_start=False + session expiry: the broker keeps QoS 1 readings for the stopped daemon.

    Also the daemon-side throughput: the backlog is drained as fast as the daemon can go.
    """
    cfg = daemon_config(broker, step_model_path, tmp_path / "state")
    d = run_daemon(cfg)
    d.wait_ready()
    assert d.terminate() == 0  # session (with its subscription) stays on the broker

    n_streams, per_stream = 200, 50
    total = n_streams * per_stream
    pub = publisher(broker.port)
    for i in range(per_stream):
        for k in range(n_streams):
            pub.send(f"sensors/s{k}", reading_payload(T0 + i, [i % 7, k % 5, (i * k) % 3]))
    pub.flush(60)

    col = collector(broker.port, ["edge-lstm/scores/#"])
    t0 = time.perf_counter()
    d2 = run_daemon(cfg)
    d2.wait_ready()
    t_ready = time.perf_counter()
    col.wait_count("edge-lstm/scores/", total, timeout=60)
    t_done = time.perf_counter()
    assert d2.terminate() == 0
    connected = [e for e in d2.events() if e["event"] == "mqtt_connected"][0]
    assert connected["session_present"] is True
    results = col.json("edge-lstm/scores/")
    assert len({(r["stream"], r["ts"]) for r in results}) == total == len(results)
    stats = [e for e in d2.events() if e["event"] == "stats"][-1]
    assert stats["acked"] == total and stats["rejected"] == {}
    print(
        f"backlog of {total} readings / {n_streams} streams drained in {t_done - t_ready:.2f} s after ready "
        f"= {total / (t_done - t_ready):.0f} readings/s through the daemon "
        f"(start-up {t_ready - t0:.2f} s, model calls {stats['model_calls']}, "
        f"max unacked {stats['unacked']})"
    )


def test_broker_restart_reconnects_and_continues(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    cfg = daemon_config(broker, step_model_path, tmp_path / "state")
    d = run_daemon(cfg)
    d.wait_ready()
    col = collector(broker.port, ["edge-lstm/#"])
    pub = publisher(broker.port)
    for i in range(5):
        pub.send("sensors/pump-7", reading_payload(T0 + i, [i, 1, 2]))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 5)

    broker.restart(down_s=0.5)
    d.wait_event("mqtt_connected", timeout=20, count=2)
    d.wait_event("mqtt_subscribed", timeout=20, count=2)
    # `online` was republished on the new connection (a fresh subscriber sees it retained).
    fresh = collector(broker.port, ["edge-lstm/status"])
    fresh.wait_for(lambda c: ("edge-lstm/status", b"online", True) in c.snapshot(), what="online after restart")

    pub2 = publisher(broker.port)
    for i in range(5, 10):
        pub2.send("sensors/pump-7", reading_payload(T0 + i, [i, 1, 2]))
    pub2.flush()
    col.wait_for(
        lambda c: {r["ts"] for r in c.json("edge-lstm/scores/")} >= {T0 + i for i in range(10)},
        timeout=20,
        what="results after the restart",
    )
    results = col.json("edge-lstm/scores/")
    after = [r for r in results if r["ts"] >= T0 + 5]
    assert after and all(r["stream"] == "pump-7" for r in after)
    # The stream's state survived the broker restart: reading 5 is scored, not warming up.
    assert after[0]["warming_up"] is False
    assert d.terminate() == 0
    stats = [e for e in d.events() if e["event"] == "stats"][-1]
    assert stats["results"] == 10 and stats["reconnects"] == 1
