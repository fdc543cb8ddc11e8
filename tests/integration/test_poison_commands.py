"""Poison commands against a real mosquitto and the real daemon process (issue 20): MQTT v5 commands
whose Response Topic holds a wildcard or names one of the daemon's own retained topics. The daemon must
not exit, must acknowledge them (no redelivery), must not change any retained topic, and must go on
answering later commands."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher, mqtt_client, properties
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_wildcard_and_own_topic_response_topics(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:

    cfg = daemon_config(broker, step_model_path, tmp_path / "state", commands={"enabled": True})
    d = run_daemon(cfg)
    d.wait_ready()
    pub = publisher(broker.port)
    pub.send("sensors/pump-7", reading_payload(T0, [0.1, 0.2, 0.3]))
    pub.flush()
    retained = collector(broker.port, ["edge-lstm/status", "edge-lstm/alarms/#"])
    retained.wait_for(lambda c: c.snapshot("edge-lstm/status"), what="retained status")
    status_before = retained.snapshot("edge-lstm/status")[-1][1]

    got: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    c = mqtt_client(broker.port, "operator-v5", on_message=lambda cl, u, msg: got.put((msg.topic, msg.payload)))
    c.loop_start()
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    c.subscribe([("ops/#", 1), ("edge-lstm/command/reply", 1)])
    time.sleep(0.3)
    poison = ["a/+/b", "ops/#", "edge-lstm/status", "edge-lstm/alarms/pump-7", "homeassistant/sensor/x/config"]
    for k, topic in enumerate([*poison, "ops/replies/me"]):
        props = properties(ResponseTopic=topic, CorrelationData=f"req-{k}".encode())
        c.publish(
            "edge-lstm/command", b'{"op": "inspect", "stream": "pump-7"}', qos=1, properties=props
        ).wait_for_publish(10)
    answers = [got.get(timeout=30) for _ in range(len(poison) + 1)]
    refused = [json.loads(p) for t, p in answers if t == "edge-lstm/command/reply"]
    assert len(refused) == len(poison) and all(r["ok"] is False for r in refused)
    assert [t for t, _ in answers if t != "edge-lstm/command/reply"] == ["ops/replies/me"]  # later ones answered
    assert d.running()  # still running

    # Nothing was written on the daemon's topics (a live subscriber saw only the status it had), and a
    # fresh subscriber still sees the daemon's own retained status.
    assert [p for _, p, _ in retained.snapshot()] == [status_before]
    late = collector(broker.port, ["edge-lstm/status", "edge-lstm/alarms/#", "homeassistant/#", "a/#"])
    late.wait_for(lambda col: col.snapshot("edge-lstm/status"), what="retained status")
    time.sleep(0.3)
    assert [p for _, p, _ in late.snapshot()] == [status_before]
    c.loop_stop()
    c.disconnect()
    assert d.terminate() == 0
    assert len([e for e in d.events() if e.get("event") == "command_refused"]) == len(poison)

    # Nothing unacked: the same daemon (same client id, persistent session) restarted gets no command
    # redelivered.
    d.start()
    d.wait_ready()
    time.sleep(1.0)
    assert d.terminate() == 0
    assert not [e for e in d.events() if e.get("event") in ("command", "command_refused")]
