"""Operations features against a real mosquitto and the real daemon process: the retained stats topic,
commands (reset / inspect / checkpoint) and Home Assistant discovery (issue 8)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher, properties
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_stats_commands_and_discovery(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    cfg = daemon_config(
        broker, step_model_path, tmp_path / "state", commands={"enabled": True}, homeassistant={"enabled": True}
    )
    col = collector(broker.port, ["edge-lstm/#", "homeassistant/#"])
    d = run_daemon(cfg)
    d.wait_ready()
    pub = publisher(broker.port)
    for i in range(4):
        pub.send("sensors/pump-7", reading_payload(T0 + i, [0.1 * i, 0.2, 0.3]))
    pub.flush()
    col.wait_count("edge-lstm/scores/", 4)

    # Home Assistant: four retained configs for the stream, on its first result (test_ha_mqtt.py checks
    # the rest).
    def stream_configs(c: Collector) -> dict[str, Any]:
        return {t: json.loads(p) for t, p, _ in c.snapshot("homeassistant/") if p and "pump" in t}

    col.wait_for(lambda c: len(stream_configs(c)) >= 4, what="discovery configs")
    configs = stream_configs(col)
    assert {t.split("/")[1] for t in configs} == {"binary_sensor", "sensor"}
    alarm = next(v for t, v in configs.items() if t.startswith("homeassistant/binary_sensor/"))
    assert alarm["state_topic"] == "edge-lstm/ha/pump-7" and alarm["device"]["name"] == "pump-7"
    late = collector(broker.port, ["homeassistant/#"])  # retained: a Home Assistant starting later sees them
    late.wait_for(lambda c: len(stream_configs(c)) >= 4, what="retained configs")

    # Commands: replies on edge-lstm/command/reply.
    pub.send("edge-lstm/command", {"op": "inspect", "stream": "pump-7"})
    pub.send("edge-lstm/command", b"{not json")
    pub.send("edge-lstm/command", {"op": "reset", "stream": "pump-7"})
    pub.send("edge-lstm/command", {"op": "checkpoint"})
    pub.flush()
    replies = col.wait_count("edge-lstm/command/reply", 4)
    assert [(r["op"], r["ok"]) for r in replies] == [
        ("inspect", True),
        (None, False),
        ("reset", True),
        ("checkpoint", True),
    ]
    assert replies[0]["steps"] == 4
    pub.send("sensors/pump-7", reading_payload(T0 + 10, [0.1, 0.2, 0.3]))
    pub.flush()
    after = col.wait_count("edge-lstm/scores/", 5)[-1]
    assert after["warming_up"] is True  # the reset stream started fresh

    # Stats: retained JSON every log.stats_interval_s (1 s here).
    # (With Home Assistant on, a first one is published at start: wait for one after the commands.)
    col.wait_for(
        lambda c: bool(s := c.snapshot("edge-lstm/stats")) and json.loads(s[-1][1])["commands"] >= 1, what="stats"
    )
    stats = json.loads(col.snapshot("edge-lstm/stats")[-1][1])
    assert stats["commands"] >= 1 and stats["results"] >= 4 and stats["model"]["name"] == "test-model"
    assert d.terminate() == 0


def test_v5_commands_reply_to_the_response_topic_with_correlation_data(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    publisher: Callable[[int], Publisher],
) -> None:
    """Every command op, sent as an MQTT v5 request: the reply arrives on the requester's response
    topic carrying its correlation data."""
    import queue
    import time

    from support.mqtt import mqtt_client

    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state", commands={"enabled": True}))
    d.wait_ready()
    pub = publisher(broker.port)
    pub.send("sensors/pump-7", reading_payload(T0, [0.1, 0.2, 0.3]))
    pub.flush()
    got: queue.SimpleQueue[tuple[str, bytes, bytes | None]] = queue.SimpleQueue()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        got.put((msg.topic, bytes(msg.payload), getattr(msg.properties, "CorrelationData", None)))

    c = mqtt_client(broker.port, "operator-v5", on_message=on_message)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    c.subscribe("ops/replies/#", qos=1)
    time.sleep(0.3)
    ops = [
        b'{"op": "inspect", "stream": "pump-7"}',
        b'{"op": "checkpoint"}',
        b'{"op": "reset", "stream": "pump-7"}',
        b'{"op": "reload"}',
        b'{"op": "nonsense"}',
    ]
    for k, cmd in enumerate(ops):
        props = properties(ResponseTopic="ops/replies/me", CorrelationData=f"req-{k}".encode())
        c.publish("edge-lstm/command", cmd, qos=1, properties=props).wait_for_publish(10)
    replies = [got.get(timeout=30) for _ in ops]
    assert [t for t, _, _ in replies] == ["ops/replies/me"] * len(ops)
    assert [cd for _, _, cd in replies] == [f"req-{k}".encode() for k in range(len(ops))]
    docs = [json.loads(p) for _, p, _ in replies]
    assert [(r["op"], r["ok"]) for r in docs] == [
        ("inspect", True), ("checkpoint", True), ("reset", True), ("reload", True), (None, False)
    ]  # fmt: skip
    d.wait_event("reloaded")
    c.loop_stop()
    c.disconnect()
    assert d.terminate() == 0
