"""on_message stays tiny, and nothing is dropped under a burst of QoS 1 readings."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.config import MqttSettings
from edge_lstm.service.mqtt import WAKE, Inbound, MqttLink

T0 = 1_700_000_000.0


def _msg(i: int) -> paho.MQTTMessage:
    """A received QoS 1 reading as paho hands it to on_message."""
    m = paho.MQTTMessage(i % 65535 + 1, f"sensors/s{i % 100}".encode())
    m.payload = reading_payload(1700000000, [1, 2, 3])
    m.qos = 1
    return m


def test_on_message_only_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network-thread callback does nothing but an append: a few microseconds per message."""
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    msgs = [_msg(i) for i in range(20_000)]
    # Nobody drains this inbox: keep it below the backpressure bound (tests/integration/test_backpressure.py).
    link = MqttLink(MqttSettings(client_id="t"), inbox, "sensors/+", max_queue=len(msgs) + 10)

    published: list[tuple[object, ...]] = []
    monkeypatch.setattr(link.client, "publish", lambda *a, **k: published.append(a))
    t = time.perf_counter()
    for m in msgs:
        link._on_message(link.client, None, m)
    per_msg_us = (time.perf_counter() - t) / len(msgs) * 1e6
    assert published == []  # the callback never publishes: the worker does
    assert inbox.qsize() == len(msgs) and link.received == len(msgs)
    first = inbox.get_nowait()
    assert isinstance(first, Inbound) and first.topic == b"sensors/s0" and first.mid == 1 and first.qos == 1
    print(f"on_message: {per_msg_us:.2f} us/message")
    # No timing assertion (a loaded machine is slow, not broken); the number is printed for the docs.
    # Wakes from publishes are coalesced: at most one outstanding.
    link._on_publish(link.client, None, 1, None, None)
    link._on_publish(link.client, None, 2, None, None)
    items = [inbox.get_nowait() for _ in range(inbox.qsize())]
    assert sum(i is WAKE for i in items) == 1
    link.stop_accepting()
    link._on_message(link.client, None, _msg(1))
    assert inbox.qsize() == 0 and link.refused == 1


@pytest.mark.integration
def test_burst_of_5000_qos1_readings_none_dropped(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    n_streams, per_stream = 100, 50
    total = n_streams * per_stream
    col = collector(broker.port, ["edge-lstm/scores/#"])
    d = run_daemon(daemon_config(broker, step_model_path, tmp_path / "state", mqtt={"receive_maximum": 1000}))
    d.wait_ready()
    pub = publisher(broker.port)
    payloads = [
        (f"sensors/s{k}", reading_payload(T0 + i, [i % 7, k % 5, (i * k) % 3]))
        for i in range(per_stream)
        for k in range(n_streams)
    ]
    t0 = time.perf_counter()
    for topic, p in payloads:
        pub.send(topic, p)
    pub.flush(60)
    t_sent = time.perf_counter() - t0
    col.wait_count("edge-lstm/scores/", total, timeout=60)
    elapsed = time.perf_counter() - t0
    results = col.json("edge-lstm/scores/")
    assert len(results) == total
    seen = {(r["stream"], r["ts"]) for r in results}
    assert len(seen) == total  # every reading has exactly one result
    # per stream, in order
    by_stream: dict[str, list[float]] = {}
    for r in results:
        by_stream.setdefault(r["stream"], []).append(r["ts"])
    assert all(v == sorted(v) for v in by_stream.values())
    assert d.terminate() == 0
    stats = [e for e in d.events() if e["event"] == "stats"][-1]
    assert stats["rejected"] == {} and stats["results"] == total and stats["acked"] == total
    print(
        f"{total} readings over {n_streams} streams: published in {t_sent:.2f} s, all results in "
        f"{elapsed:.2f} s = {total / elapsed:.0f} readings/s end to end; model calls {stats['model_calls']}"
    )
