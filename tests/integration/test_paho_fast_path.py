"""BatchedClient's PUBLISH/PUBACK fast paths deliver exactly what stock paho delivers (real mosquitto).

The fast paths skip paho's per-packet Properties/ReasonCode objects for the common packets; every
other packet (QoS 0/2, properties present, MQTT 3.1.1, automatic acks) must still take paho's path.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from support.mqtt import mqtt_client, properties

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.paho_adapter.client import BatchedClient, is_handed_over

pytestmark = pytest.mark.integration


def _props(**fields: Any) -> Properties:
    return properties("PUBLISH", **fields)


# (topic, payload, qos, retain, properties): the common case and everything around it.
CASES: list[tuple[str, bytes, int, bool, Properties | None]] = [
    ("fp/plain", b'{"ts": 1, "v": 2}', 1, False, None),
    ("fp/retained", b"r", 1, True, None),
    ("fp/empty", b"", 1, False, None),
    ("fp/ünïcode/topic", "ü".encode() * 300, 1, False, None),  # > 127 bytes: 2-byte remaining length
    ("fp/props", b"p", 1, False, _props(ResponseTopic="fp/reply", CorrelationData=b"\x01\x02")),
    ("fp/user", b"u", 1, False, _props(UserProperty=[("k", "v")])),
    ("fp/qos0", b"zero", 0, False, None),
    ("fp/qos2", b"two", 2, False, None),
]


class _Receiver:
    def __init__(self, client: paho.Client, manual_ack: bool) -> None:
        self.client, self.manual_ack = client, manual_ack
        self.got: list[paho.MQTTMessage] = []
        self.subscribed = threading.Event()
        client.on_connect = lambda c, *_: c.subscribe("fp/#", qos=2)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        self.got.append(msg)
        if self.manual_ack:
            c.ack(msg.mid, msg.qos)

    def view(self) -> list[tuple[Any, ...]]:
        out = []
        for m in sorted(self.got, key=lambda m: m.topic):
            props = m.properties
            out.append(
                (
                    m.topic,
                    m.payload,
                    m.qos,
                    m.retain,
                    m.dup,
                    getattr(props, "ResponseTopic", None),
                    getattr(props, "CorrelationData", None),
                    getattr(props, "UserProperty", None),
                )
            )
        return out


def _receive(port: int, client: paho.Client, manual_ack: bool) -> list[tuple[Any, ...]]:
    r = _Receiver(client, manual_ack)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert r.subscribed.wait(10)
        pub = mqtt_client(port)
        pub.loop_start()
        for topic, payload, qos, retain, props in CASES:
            pub.publish(topic, payload, qos=qos, retain=retain, properties=props).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while len(r.got) < len(CASES) + 1 and time.monotonic() < deadline:  # + the stored message
            time.sleep(0.01)
        time.sleep(0.2)  # nothing more may come
        seen = r.view()
        # Live copies of retained messages arrive unflagged; clear the store for the next receiver.
        pub.publish("fp/retained", b"", qos=1, retain=True).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
        return seen
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311])
@pytest.mark.parametrize("manual_ack", [True, False])
def test_fast_publish_path_delivers_what_paho_delivers(
    broker: PrivateBroker, protocol: MQTTProtocolVersion, manual_ack: bool
) -> None:
    def make(cls: type[paho.Client]) -> paho.Client:
        return cls(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=manual_ack)

    # A message already stored when each receiver subscribes: delivered with the retain flag set.
    pub = mqtt_client(broker.port)
    pub.loop_start()
    pub.publish("fp/stored", b"kept", qos=1, retain=True).wait_for_publish(10)
    try:
        reference = _receive(broker.port, make(paho.Client), manual_ack)
        batched = _receive(broker.port, make(BatchedClient), manual_ack)
    finally:
        pub.publish("fp/stored", b"", qos=1, retain=True).wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()
    assert len(reference) == len(CASES) + 1
    assert batched == reference
    assert ("fp/stored", b"kept", 1, True) == batched[[m[0] for m in batched].index("fp/stored")][:4]
    plain = [m for m in batched if m[0] == "fp/plain"]
    assert plain and plain[0][1] == b'{"ts": 1, "v": 2}' and plain[0][2] == 1
    if protocol == paho.MQTTv5:
        props = [m for m in batched if m[0] == "fp/props"]
        assert props and props[0][5] == "fp/reply" and props[0][6] == b"\x01\x02"


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311])
def test_fast_puback_path_completes_publishes(broker: PrivateBroker, protocol: MQTTProtocolVersion) -> None:
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=protocol)
    seen: list[tuple[int, Any]] = []
    c.on_publish = lambda cl, u, mid, rc, props: seen.append((mid, rc))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        infos = [c.publish("fp/out", b"x", qos=1) for _ in range(50)]
        for info in infos:
            info.wait_for_publish(10)
            assert is_handed_over(info)
        assert sorted(mid for mid, _ in seen) == sorted(i.mid for i in infos)
        assert not any(rc.is_failure for _, rc in seen)
        assert not c._out_messages  # every message released, as paho's own path does
    finally:
        c.disconnect()
        c.loop_stop()


def test_buffered_reads_deliver_a_burst_without_waiting_for_more_traffic(broker: PrivateBroker) -> None:
    """One recv takes many packets; paho reads one per wake-up when nothing is outgoing, so the link
    must read what is buffered before select() sleeps: a burst followed by silence arrives whole."""
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    r = _Receiver(c, manual_ack=True)
    c.connect("127.0.0.1", broker.port, keepalive=60)
    c.loop_start()
    pub = mqtt_client(broker.port)
    try:
        assert r.subscribed.wait(10)
        pub.loop_start()
        infos = [pub.publish(f"fp/burst/{i}", b"x" * 40, qos=1) for i in range(500)]
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 3  # far below the keepalive: no PINGRESP comes to wake paho
        while len(r.got) < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(r.got) == 500
        assert sorted(m.topic for m in r.got) == sorted(f"fp/burst/{i}" for i in range(500))
        assert c._rbuf  # the burst did go through the buffer (more than one packet per recv)
    finally:
        pub.loop_stop()
        pub.disconnect()
        c.disconnect()
        c.loop_stop()


def test_a_batch_writes_its_qos1_publishes_and_acks_as_one_packet(broker: PrivateBroker) -> None:
    """Inside batch(): QoS 1 publishes and acks are queued as one write; all arrive and complete, and the
    acks take effect (a resumed session gets nothing redelivered)."""
    sink = _Receiver(mqtt_client(broker.port), manual_ack=False)
    sink.client.connect("127.0.0.1", broker.port)
    sink.client.loop_start()
    c = BatchedClient(CallbackAPIVersion.VERSION2, client_id="fp-batch", protocol=paho.MQTTv5, manual_ack=True)
    got: list[paho.MQTTMessage] = []
    c.on_message = lambda cl, u, msg: got.append(msg)
    c.on_connect = lambda cl, *_: cl.subscribe("fp-in/#", qos=1)
    props = properties("CONNECT", SessionExpiryInterval=300)
    c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    c.loop_start()
    pub = mqtt_client(broker.port)
    pub.loop_start()
    try:
        assert sink.subscribed.wait(10)
        time.sleep(0.3)  # fp-batch's subscription is in place
        for i in range(20):  # mosquitto sends 20 unacknowledged at most (its max_inflight_messages)
            pub.publish(f"fp-in/{i}", b"r", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(got) == 20
        queued = []
        with c.batch():
            infos = [c.publish(f"fp/batch/{i}", b"x" * 30, qos=1) for i in range(100)]
            for m in got:
                c.ack(m.mid, 1)
            queued = list(c._out_packet)
        assert len(queued) <= 2  # one write for the publishes, one for the acks (fewer if already taken)
        for info in infos:
            info.wait_for_publish(10)
        deadline = time.monotonic() + 10
        while len([m for m in sink.got if m.topic.startswith("fp/batch/")]) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(m.topic for m in sink.got if m.topic.startswith("fp/batch/")) == sorted(
            f"fp/batch/{i}" for i in range(100)
        )
        # The acks took effect: the resumed session has nothing to redeliver.
        c.disconnect()
        c.loop_stop()
        got.clear()
        c.reconnect()
        c.loop_start()
        time.sleep(1.0)
        assert got == []
    finally:
        pub.loop_stop()
        pub.disconnect()
        c.disconnect()
        c.loop_stop()
        sink.client.disconnect()
        sink.client.loop_stop()


def test_a_batch_made_across_a_reconnect_keeps_its_publishes_and_drops_its_acks(broker: PrivateBroker) -> None:
    """Publishes made for a replaced connection still go out (at most duplicates); acks carrying the old
    connection's packet ids never reach the new one."""
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    c.loop_stop()  # nobody writes _out_packet out now: what a batch queued can be looked at
    try:
        for replaced in (False, True):
            c._out_packet.clear()
            with c.batch():
                for i in range(3):
                    c.publish(f"fp/x/{i}", b"p", qos=1)
                c.ack(7, 1)
                c.ack(8, 1)
                if replaced:
                    c._coalesce_sock = object()  # as if paho had reconnected during the batch
            writes = [bytes(p["packet"]) for p in c._out_packet]
            puback = bytes([0x40, 2, 0, 7, 0x40, 2, 0, 8])
            assert writes[0][0] == 0x32 and writes[0].count(b"fp/x/") == 3  # the three publishes, one write
            assert writes[1:] == ([] if replaced else [puback])
    finally:
        c.disconnect()
