"""The paho adapter's per-packet paths against paho's own, without a broker: a socket pair stands in for the
connection (the broker-level checks are in tests/integration/test_paho_fast_path.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from support.mqtt import properties
from support.outcomes import present

from edge_lstm.service.paho_adapter import client as client_module
from edge_lstm.service.paho_adapter.client import BatchedClient
from edge_lstm.service.paho_adapter.fast import _PUBLISHED, SMALL_READ_BYTES, _Info, _remaining_length


@pytest.fixture
def pair() -> Iterator[tuple[BatchedClient, socket.socket]]:
    """A v5 manual-ack client whose socket is one end of a pair; the test writes the broker's side."""
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    c.max_inflight_messages_set(0)  # as MqttLink: no paho window
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours
    yield c, broker
    c._sock = None
    ours.close()
    broker.close()


def publish_packet(topic: bytes, payload: bytes, mid: int, *, v5: bool = True, props: bytes = b"") -> bytes:
    """A QoS 1 PUBLISH as a broker sends it."""
    prop_block = (_remaining_length(len(props)) + props) if v5 else b""
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + prop_block + payload
    return b"\x32" + _remaining_length(len(body)) + body


def test_whole_buffered_packets_go_to_on_reading_without_paho_s_per_byte_reads(pair: Any) -> None:
    c, broker = pair
    got: list[tuple[bytes, bytes, int]] = []
    c.on_reading = lambda topic, payload, mid: got.append((topic, payload, mid))
    calls = 0
    inner = c._sock_recv

    def counting(bufsize: int) -> bytes:
        nonlocal calls
        calls += 1
        got: bytes = inner(bufsize)
        return got

    c._sock_recv = counting  # paho's own path reads through this: 3+ calls per packet
    sent = [(f"sensors/s{i}".encode(), b'{"ts": %d}' % i + b"x" * (i * 7), i + 1) for i in range(50)]
    broker.sendall(b"".join(publish_packet(t, p, m) for t, p, m in sent))
    assert c.loop_read() == paho.MQTT_ERR_SUCCESS
    assert got == sent and calls == 0


def test_a_packet_split_across_reads_is_delivered_once_and_whole(pair: Any) -> None:
    c, broker = pair
    got: list[tuple[bytes, bytes, int]] = []
    c.on_reading = lambda topic, payload, mid: got.append((topic, payload, mid))
    whole = publish_packet(b"sensors/a", b"p" * 300, 7)  # 2-byte remaining length
    for cut in (1, 2, 10):
        broker.sendall(whole[:cut])
        c.loop_read()
        assert got == []
        broker.sendall(whole[cut:] + whole)  # the rest, then a whole one behind it
        c.loop_read()
        assert got == [(b"sensors/a", b"p" * 300, 7)] * 2
        got.clear()


def test_messages_with_properties_or_other_qos_still_reach_on_message(pair: Any) -> None:
    c, broker = pair
    readings: list[bytes] = []
    messages: list[paho.MQTTMessage] = []
    c.on_reading = lambda topic, payload, mid: readings.append(topic)
    c.on_message = lambda cl, u, msg: messages.append(msg)
    corr = b"\x09\x00\x02ab"  # CorrelationData "ab"
    qos0 = b"\x30" + _remaining_length(2 + 4 + 1 + 1) + b"\x00\x04q/q0" + b"\x00" + b"z"
    broker.sendall(publish_packet(b"cmd", b"x", 3, props=corr) + qos0 + publish_packet(b"s/r", b"y", 4))
    c.loop_read()
    assert readings == [b"s/r"]
    assert [(m.topic, m.qos) for m in messages] == [("cmd", 1), ("q/q0", 0)]
    assert present(messages[0].properties).CorrelationData == b"ab"  # type: ignore[attr-defined]


def test_a_puback_completes_a_fast_publish(pair: Any) -> None:
    c, broker = pair
    done: list[int] = []
    c.on_publish = lambda cl, u, mid, rc, props: done.append(mid)
    with c.batch():
        info = c.publish("out/a", b"r", qos=1)
    assert isinstance(info, _Info) and info.mid in c._out_messages
    broker.sendall(b"\x40\x02" + info.mid.to_bytes(2, "big"))
    c.loop_read()
    assert done == [info.mid] and info.is_published() and not c._out_messages


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311])
@pytest.mark.parametrize(
    ("topic", "payload", "retain"),
    [
        ("edge-lstm/scores/a", b'{"score": 1.5}', False),
        ("edge-lstm/alarms/a", b"{}", True),
        ("edge-lstm/scores/empty", b"", False),
        ("edge-lstm/scores/ünïcode-" + "x" * 150, b"p" * 200, False),  # 2-byte remaining length
        ("edge-lstm/scores/big", b"b" * 20_000, True),  # 3-byte remaining length
    ],
)
def test_a_fast_publish_queues_what_paho_queues(protocol: int, topic: str, payload: bytes, retain: bool) -> None:
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=True)
    c.max_inflight_messages_set(0)
    ours, broker = socket.socketpair()
    c._sock = ours
    try:
        seen = []
        for props in (None, properties()):  # with properties: paho's own path
            c._out_packet.clear()
            c._out_messages.clear()
            c._inflight_messages, c._last_mid = 0, 99
            with c.batch():
                info = c.publish(topic, payload, qos=1, retain=retain, properties=props)
            m = c._out_messages[100]
            seen.append(
                (
                    [bytes(p["packet"]) for p in c._out_packet],
                    (info.mid, info.rc, info._published, m.topic, m.payload, m.qos, m.retain, m.dup, m.state),
                    c._inflight_messages,
                    type(info) is _Info,
                )
            )
        (fast, fast_state, fast_inflight, fast_info), (ref, ref_state, ref_inflight, ref_info) = seen
        assert fast_info and not ref_info  # the first took the fast path, the second paho's
        assert fast == ref and fast_state == ref_state and fast_inflight == ref_inflight == 1
    finally:
        c._sock = None
        ours.close()
        broker.close()


def test_a_fast_publish_while_disconnected_is_kept_for_the_next_connection_as_paho_keeps_it() -> None:
    c = BatchedClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    c.max_inflight_messages_set(0)
    seen = []
    for props in (None, properties()):
        c._out_messages.clear()
        c._last_mid = 0
        with c.batch():
            info = c.publish("out/x", b"r", qos=1, properties=props)
        m = c._out_messages[1]
        seen.append((info.rc, m.state, c._inflight_messages, list(c._out_packet)))
    assert seen[0] == seen[1] == (paho.MQTT_ERR_NO_CONN, paho.mqtt_ms_publish, 0, [])


def test_waiters_on_fast_publishes_all_wake_although_they_share_a_condition() -> None:
    infos = [_Info(i) for i in range(1, 4)]
    waiters: list[threading.Thread] = []
    for info in infos:  # queued on the shared condition in this order
        w = threading.Thread(target=info.wait_for_publish)  # no timeout
        w.start()
        while len(_PUBLISHED._waiters) < len(waiters) + 1:  # type: ignore[attr-defined]
            time.sleep(0.001)
        waiters.append(w)
    infos[-1]._set_as_published()  # the last waiter's message: a single notify() would wake the first
    waiters[-1].join(10)
    assert not waiters[-1].is_alive()
    for info in infos[:-1]:
        info._set_as_published()
    for w in waiters:
        w.join(10)
    assert not any(w.is_alive() for w in waiters)


def test_a_plain_puback_marks_the_message_published_before_calling_on_handed_over(pair: Any) -> None:
    c, broker = pair
    seen: list[tuple[bool, int]] = []
    c.on_publish = lambda *a: pytest.fail("on_publish is not called when on_handed_over is set")
    with c.batch():
        info = c.publish("out/a", b"r", qos=1)
    c.on_handed_over = lambda: seen.append((info.is_published(), c._inflight_messages))
    broker.sendall(b"\x40\x02" + info.mid.to_bytes(2, "big") + b"\x40\x02\xff\xff")  # + an unknown id
    c.loop_read()
    assert seen == [(True, 0)] and not c._out_messages


def test_an_ack_in_a_batch_is_paho_s_puback_without_paho_s_send_path(pair: Any) -> None:
    c, _ = pair
    c._send_puback = lambda mid: pytest.fail("paho's send path")
    c._out_packet.clear()
    with c.batch():
        c.ack(7, 1)
        c.ack(0x1234, 1)
    assert [bytes(p["packet"]) for p in c._out_packet] == [struct.pack("!BBHBBH", 0x40, 2, 7, 0x40, 2, 0x1234)]


def test_a_run_of_readings_and_pubacks_is_handled_in_order_around_other_packets(pair: Any) -> None:
    """The network thread handles readings and plain PUBACKs whole in the buffer in one loop
    (`_read_plain`); anything else between them (a QoS 0 message, a PINGRESP, an unknown packet id, a
    packet cut by the read) still goes through paho's path, in order."""
    c, broker = pair
    events: list[tuple[Any, ...]] = []
    c.on_reading = lambda topic, payload, mid: events.append(("reading", topic, payload, mid))
    c.on_message = lambda cl, u, msg: events.append(("message", msg.topic, msg.qos))
    with c.batch():
        infos = [c.publish(f"out/{i}", b"r", qos=1) for i in range(3)]
    c.on_handed_over = lambda: events.append(("handed_over", [i.is_published() for i in infos]))
    c.on_publish = lambda *a: pytest.fail("on_publish is not called when on_handed_over is set")
    by_paho: list[int] = []  # packets that went through paho's dispatch
    handle = c._packet_handle

    def counting() -> Any:
        by_paho.append(c._in_packet["command"])
        return handle()

    c._packet_handle = counting

    def puback(mid: int) -> bytes:
        return b"\x40\x02" + mid.to_bytes(2, "big")

    qos0 = b"\x30" + _remaining_length(2 + 4 + 1 + 1) + b"\x00\x04q/q0" + b"\x00" + b"z"
    last = publish_packet(b"s/4", b"d" * 200, 14)
    broker.sendall(
        publish_packet(b"s/1", b"a", 11)
        + puback(infos[0].mid)
        + publish_packet(b"s/2", b"b", 12)
        + puback(0xFFFF)  # not ours: ignored, as paho ignores it
        + qos0
        + publish_packet(b"s/3", b"c", 13)
        + puback(infos[2].mid)
        + b"\xd0\x00"  # PINGRESP
        + last[:5]
    )
    c.loop_read()
    broker.sendall(last[5:])
    c.loop_read()
    assert events == [
        ("reading", b"s/1", b"a", 11),
        ("handed_over", [True, False, False]),
        ("reading", b"s/2", b"b", 12),
        ("message", "q/q0", 0),
        ("reading", b"s/3", b"c", 13),
        ("handed_over", [True, False, True]),
        ("reading", b"s/4", b"d" * 200, 14),
    ]
    assert list(c._out_messages) == [infos[1].mid] and c._inflight_messages == 1
    assert by_paho == [0x30, 0xD0, 0x32]  # the QoS 0 message, the PINGRESP, the reading cut by the read
    assert c._in_packet["command"] == 0 and c._rpos == len(c._rbuf)


def test_a_reading_whose_callback_raises_is_consumed_not_delivered_again(pair: Any) -> None:
    c, broker = pair
    got: list[int] = []

    def on_reading(topic: bytes, payload: bytes, mid: int) -> None:
        got.append(mid)
        if mid == 1:
            raise RuntimeError("boom")

    c.on_reading = on_reading
    broker.sendall(publish_packet(b"s/a", b"x", 1) + publish_packet(b"s/b", b"y", 2))
    with pytest.raises(RuntimeError):
        c.loop_read()
    c.loop_read()
    assert got == [1, 2]


class AckRecorder:
    """The client's socket, recording `setsockopt` (a socket pair is not TCP: the option would fail)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_every_read_that_brings_data_is_acknowledged_at_once(pair: Any) -> None:
    """Against a broker with Nagle's algorithm on, a delayed ACK holds the broker's next readings until
    the daemon sends something (docs/performance.md, round 9): each read asks for an immediate ACK, on
    the buffered path (whole packets) and on paho's own (a packet split across reads)."""
    c, broker = pair
    rec = c._sock = AckRecorder(c._sock)
    got: list[int] = []
    c.on_reading = lambda topic, payload, mid: got.append(mid)
    quick = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    broker.sendall(publish_packet(b"sensors/a", b"1", 1))
    c.loop_read()
    assert got == [1] and rec.options == [quick]
    whole = publish_packet(b"sensors/a", b"p" * 300, 2)
    broker.sendall(whole[:5])
    c.loop_read()
    broker.sendall(whole[5:])
    c.loop_read()
    assert got == [1, 2] and rec.options == [quick] * 3
    assert c.loop_read() == paho.MQTT_ERR_SUCCESS and rec.options == [quick] * 3  # nothing read: no ACK asked
    burst = b"".join(publish_packet(b"sensors/a", b"x" * 100, 3 + i) for i in range(SMALL_READ_BYTES // 100 + 1))
    broker.sendall(burst)  # a full read: the broker has more queued, Nagle holds nothing back
    c.loop_read()
    assert len(got) > 2 and rec.options == [quick] * 3


MIN_NAP = client_module.MIN_NAP_S  # a nap ends within this of read_by


class Due:
    def __init__(self, read_by: float) -> None:
        self.read_by = read_by


@pytest.fixture
def looping(pair: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BatchedClient, socket.socket, list[int]]]:
    """`pair`, connected, with the wake-up socket pair paho's threaded loop has, and a long nap cap."""
    c, broker = pair
    c._sockpairR, c._sockpairW = socket.socketpair()
    c._state = _ConnectionState.MQTT_CS_CONNECTED
    monkeypatch.setattr(client_module, "MAX_NAP_S", 600.0)
    got: list[int] = []
    c.on_reading = lambda topic, payload, mid: got.append(mid)
    yield c, broker, got
    c._sockpairR.close()
    c._sockpairW.close()


def test_after_a_small_read_the_network_thread_naps_until_the_worker_needs_the_readings(looping: Any) -> None:
    c, broker, got = looping
    c.reads_due = Due(time.monotonic() + 0.3)
    broker.sendall(publish_packet(b"sensors/a", b"1", 1))
    t0 = time.monotonic()
    assert c._loop(0) == paho.MQTT_ERR_SUCCESS
    assert got == [1] and time.monotonic() - t0 >= 0.3 - MIN_NAP  # delivered, then napped
    broker.sendall(publish_packet(b"sensors/a", b"2", 2))
    c.reads_due = Due(0.0)  # the worker is not in a window: no nap
    t0 = time.monotonic()
    c._loop(0)
    assert got == [1, 2] and time.monotonic() - t0 < 0.3


def test_the_worker_s_wake_up_ends_a_nap_so_results_go_out_at_once(looping: Any) -> None:
    c, broker, got = looping
    c.reads_due = Due(time.monotonic() + 600)
    broker.sendall(publish_packet(b"sensors/a", b"1", 1))
    threading.Timer(0.05, lambda: c._sockpairW.send(b"0")).start()  # what `batch` does after results
    t0 = time.monotonic()
    c._loop(0)
    assert got == [1] and time.monotonic() - t0 < 300


def test_no_nap_after_a_large_read_or_none(looping: Any) -> None:
    c, broker, got = looping
    c.reads_due = Due(time.monotonic() + 600)
    burst = [publish_packet(b"sensors/a", b"x" * 100, i + 1) for i in range(SMALL_READ_BYTES // 100 + 1)]
    broker.sendall(b"".join(burst))  # a backlog: read on at once
    t0 = time.monotonic()
    while len(got) < len(burst):
        c._loop(0)
    c._loop(0)  # nothing read: no nap
    assert time.monotonic() - t0 < 300
