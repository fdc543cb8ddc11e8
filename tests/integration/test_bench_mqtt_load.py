"""bench/mqtt_load.py, the benchmark's raw-socket publisher and collector, against a real broker and paho."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import mqtt_load  # noqa: E402

pytestmark = pytest.mark.integration


def test_split_packets_keeps_an_incomplete_tail() -> None:
    pub = b"\x30\x05\x00\x01tab"  # QoS 0 PUBLISH, topic "t", payload "ab"
    big = b"\x30\x82\x01" + b"\x00\x01t" + b"x" * 127  # remaining length 130 in two bytes
    buf = pub + big + pub[:3]
    packets, pos = mqtt_load.split_packets(buf)
    assert [(first, end - start) for first, start, end in packets] == [(0x30, 5), (0x30, 130)]
    assert pos == len(pub) + len(big)
    assert mqtt_load.split_packets(big[:2]) == ([], 0)  # the length itself not all there


def test_raw_publisher_and_subscriber_speak_mqtt_with_paho(broker) -> None:  # type: ignore[no-untyped-def]
    """QoS 1 publishes reach a paho subscriber intact and are all PUBACKed; what paho publishes reaches
    the raw subscriber; a payload over 127 bytes (two length bytes) too; message ids wrap."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *_: cl.subscribe("sensors/#", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda cl, ud, m: got.append((m.topic, bytes(m.payload), m.qos))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    raw_got: list[tuple[float, list[bytes]]] = []
    sub = mqtt_load.RawSubscriber(broker.port, "edge-lstm/scores/#")
    reader = threading.Thread(target=sub.run, args=(lambda now, ps: raw_got.append((now, ps)),), daemon=True)
    reader.start()
    try:
        assert subscribed.wait(10)
        p = mqtt_load.RawPublisher(broker.port)
        p.mid = 0xFFFE  # the next ids are 0xFFFF, then 1 (0 is not a valid packet id)
        long = b'{"ts": 1.25, "x": "' + b"y" * 200 + b'"}'
        packets = [(mqtt_load.topic_part(f"sensors/s{i}"), b'{"ts": %d}' % i) for i in range(5)]
        p.publish([*packets, (mqtt_load.topic_part("sensors/long"), long)])
        assert p.flush(10) and p.acked == p.sent == 6
        assert p.mid == 5
        p.close()
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [(f"sensors/s{i}", b'{"ts": %d}' % i, 1) for i in range(5)] + [("sensors/long", long, 1)]

        for qos in (0, 1):
            c.publish("edge-lstm/scores/a", b'{"stream":"a","ts":1764370000.123456,"score":0.5}', qos=qos)
        deadline = time.monotonic() + 10
        while sum(len(ps) for _, ps in raw_got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        payloads = [q for _, ps in raw_got for q in ps]
        assert payloads == [b'{"stream":"a","ts":1764370000.123456,"score":0.5}'] * 2
        assert mqtt_load.result_ts(payloads[0]) == 1764370000.123456
        assert all(abs(now - time.time()) < 60 for now, _ in raw_got)
    finally:
        sub.close()
        reader.join(5)
        c.disconnect()
        c.loop_stop()


def test_result_ts_reads_both_spacings() -> None:
    assert mqtt_load.result_ts(b'{"stream": "a", "ts": 1764370000.5, "score": 0.0}') == 1764370000.5
    assert mqtt_load.result_ts(b'{"stream":"a","ts":1.5e9}') == 1.5e9
    with pytest.raises(ValueError):
        mqtt_load.result_ts(b'{"stream":"a"}')
