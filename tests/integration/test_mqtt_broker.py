"""PrivateBroker(persistence=True) really persists: retained messages and a persistent session's queue
survive restart() (also when the tests run as root: mosquitto must not drop to a user that cannot
write the private directory)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.mqtt import mqtt_client

from edge_lstm.demo.broker import BrokerUnavailable, PrivateBroker

pytestmark = pytest.mark.integration


class _Client:
    """A minimal MQTT v5 client: connects, optionally subscribes, collects messages."""

    def __init__(
        self, port: int, client_id: str = "", *, persistent: bool = False, subscribe: str | None = None
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.session_present: bool | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

        def on_connect(cl: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
            self.session_present = bool(flags.session_present)
            if subscribe:
                cl.subscribe(subscribe, qos=1)
            else:
                self._ready.set()

        def on_subscribe(cl: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            self._ready.set()

        def on_message(cl: Any, u: Any, m: Any) -> None:
            with self._lock:
                self.messages.append((m.topic, m.payload, bool(m.retain)))

        self.client = mqtt_client(
            port,
            client_id,
            persistent=persistent,  # session expiry 3600 s
            on_connect=on_connect,
            on_subscribe=on_subscribe,
            on_message=on_message,
        )
        self.client.loop_start()
        assert self._ready.wait(10), "no CONNACK/SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.01)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_persistence_keeps_retained_and_queued_messages_across_restart() -> None:
    try:
        broker = PrivateBroker(persistence=True).start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))
    try:
        # An offline persistent-session subscriber: subscribe, go away (session kept).
        sub = _Client(broker.port, "persist-sub", persistent=True, subscribe="q/#")
        sub.close()
        pub = _Client(broker.port, "persist-pub")
        pub.publish("r/status", b"online", retain=True)
        pub.publish("q/reading", b"queued-1")
        pub.publish("q/reading", b"queued-2")
        pub.close()

        broker.restart()  # SIGTERM: mosquitto writes its persistence file on the way down

        assert (broker.dir / "mosquitto.db").is_file(), list(broker.dir.iterdir())
        assert broker.log.is_file() and broker.log.stat().st_size > 0  # the log is written too
        fresh = _Client(broker.port, "persist-fresh", subscribe="r/#")
        assert ("r/status", b"online", True) in fresh.wait_messages(1)
        fresh.close()
        back = _Client(broker.port, "persist-sub", persistent=True)  # no subscribe: the session has it
        assert back.session_present is True
        got = back.wait_messages(2)
        back.close()
        assert [(t, p) for t, p, _ in got] == [("q/reading", b"queued-1"), ("q/reading", b"queued-2")]
    finally:
        broker.stop()
        if broker._tmp is not None:
            broker._tmp.cleanup()
