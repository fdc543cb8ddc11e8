"""Operations features against a real mosquitto and the real daemon process: the retained stats topic,
commands (reset / inspect / checkpoint) and Home Assistant discovery (issue 8)."""

from __future__ import annotations

import json

import pytest
from support.config import daemon_config
from support.traffic import reading_payload

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def test_stats_commands_and_discovery(broker, step_model_path, tmp_path, run_daemon, collector, publisher):
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

    # Home Assistant: three retained configs for the stream, on its first result.
    col.wait_for(lambda c: len(c.snapshot("homeassistant/")) >= 3, what="discovery configs")
    configs = {t: json.loads(p) for t, p, _ in col.snapshot("homeassistant/")}
    assert {t.split("/")[1] for t in configs} == {"binary_sensor", "sensor"}
    alarm = next(v for t, v in configs.items() if t.startswith("homeassistant/binary_sensor/"))
    assert alarm["state_topic"] == "edge-lstm/alarms/pump-7" and alarm["device"]["name"] == "pump-7"
    late = collector(broker.port, ["homeassistant/#"])  # retained: a Home Assistant starting later sees them
    late.wait_for(lambda c: len(c.snapshot()) >= 3, what="retained configs")

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
    col.wait_for(lambda c: c.snapshot("edge-lstm/stats"), what="stats")
    stats = json.loads(col.snapshot("edge-lstm/stats")[-1][1])
    assert stats["commands"] >= 1 and stats["results"] >= 4 and stats["model"]["name"] == "test-model"
    assert d.terminate() == 0


def test_v5_command_reply_goes_to_the_response_topic(broker, step_model_path, tmp_path, run_daemon, collector):
    import time

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from support.mqtt import mqtt_client

    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state", commands={"enabled": True}))
    d.wait_ready()
    col = collector(broker.port, ["ops/replies/#"])
    c = mqtt_client(broker.port, "operator-v5")
    c.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "ops/replies/me"
    props.CorrelationData = b"req-1"
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    c.publish("edge-lstm/command", b'{"op": "checkpoint"}', qos=1, properties=props).wait_for_publish(10)
    (reply,) = col.wait_count("ops/replies/me", 1)
    assert reply["op"] == "checkpoint" and reply["ok"] is True
    c.loop_stop()
    c.disconnect()
    assert d.terminate() == 0
