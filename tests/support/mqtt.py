"""MQTT clients for tests: one paho client factory (`mqtt_client`) and the clients built on it.

- `Collector`: subscribes and collects (topic, payload, retain) thread-safely
- `Publisher`: QoS 1 publisher that can wait until the broker has every message
- `SessionClient`: persistent session (stable id, clean_start=False, session expiry) that rides out
  broker restarts
- `OrderedPublisher`: persistent-session publisher that keeps its publication order across restarts
- `retained()`: the retained message on a topic, as a fresh subscriber sees it
- `properties()`: MQTT v5 properties of a packet type with the given fields set
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


def mqtt_client(
    port: int,
    client_id: str = "",
    *,
    protocol: int = 5,
    persistent: bool = False,
    expiry_s: int = 3600,
    keepalive: int = 60,
    max_inflight: int | None = None,
    max_queued: int | None = None,
    reconnect_delay: tuple[float, float] | None = None,
    **callbacks: Callable[..., Any],
) -> Any:
    """A paho client (callback API version 2) connected to the broker on 127.0.0.1:`port`: CONNECT is
    sent, the network loop is not started (`loop_start()`, or drive `loop()` yourself).

    `protocol` 5 (MQTT v5) or 4 (3.1.1). `persistent`: resume the session and keep it on the broker
    (v5: clean_start=False and a session expiry of `expiry_s`; 3.1.1: clean_session=False); otherwise
    paho's defaults. `max_inflight`, `max_queued`, `reconnect_delay` (min_s, max_s): paho's settings,
    left at paho's defaults when None. `callbacks`: paho callbacks by name (`on_connect=...`), set
    before connecting.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client_kw: dict[str, Any] = {}
    if protocol == 5:
        version = paho.MQTTv5
    elif protocol == 4:
        version = paho.MQTTv311
        client_kw["clean_session"] = not persistent
    else:
        raise ValueError(f"protocol must be 5 or 4 (3.1.1), got {protocol!r}")
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **client_kw)
    if max_inflight is not None:
        c.max_inflight_messages_set(max_inflight)
    if max_queued is not None:
        c.max_queued_messages_set(max_queued)
    if reconnect_delay is not None:
        c.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # paho takes float seconds too
    for name, fn in callbacks.items():
        if not name.startswith("on_") or not hasattr(c, name):
            raise TypeError(f"not a paho callback: {name}")
        setattr(c, name, fn)
    connect_kw: dict[str, Any] = {}
    if persistent and protocol == 5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry_s
        connect_kw = {"clean_start": False, "properties": props}
    c.connect(HOST, port, keepalive=keepalive, **connect_kw)
    return c


# ---- clean-session clients (tests against the `broker` fixture) ----------------------------------


class Collector:
    """A paho client subscribed to `topics`; collects (topic, payload, retain) thread-safely."""

    def __init__(self, port: int, topics: list[str], client_id: str = "") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._pending_subs = len(topics)
        self.topics = topics

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            for t in topics:
                c.subscribe(t, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            with self._lock:
                self._pending_subs -= 1
                if self._pending_subs <= 0:
                    self._subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client = mqtt_client(
            port,
            client_id,
            max_inflight=1000,
            on_connect=on_connect,
            on_subscribe=on_subscribe,
            on_message=on_message,
        )
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("collector did not subscribe")

    def snapshot(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def json(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, r in self.snapshot(prefix)]

    def wait_for(self, pred: Callable[[Collector], object], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or pred}; got {len(self.messages)} messages")

    def wait_count(self, prefix: str, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        self.wait_for(lambda c: len(c.snapshot(prefix)) >= n, timeout, f"{n} messages on {prefix}*")
        return self.json(prefix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A QoS 1 publisher (MQTT v5) that waits until the broker has every message."""

    def __init__(self, port: int) -> None:
        self.client = mqtt_client(port, max_inflight=1000)
        self.client.loop_start()
        self.infos: list[Any] = []

    def send(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.infos.append(self.client.publish(topic, payload, qos=qos, retain=retain))

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for i in self.infos:
            i.wait_for_publish(max(0.01, deadline - time.monotonic()))
        self.infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


def properties(packet_type: str = "PUBLISH", **fields: object) -> Properties:
    """paho's `Properties` for `packet_type` (a `PacketTypes` name) with `fields` set (paho's
    constructor is untyped: this is the one typed way in for the tests)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props: Properties = Properties(getattr(PacketTypes, packet_type))  # type: ignore[no-untyped-call]
    for name, value in fields.items():
        setattr(props, name, value)
    return props


def retained(port: int, topic: str, timeout: float = 3.0) -> bytes | None:
    """The retained message on `topic` as a fresh (clean session) subscriber sees it; None if none."""
    got: list[bytes] = []
    done = threading.Event()

    def on_subscribe(cl: Any, u: Any, mid: int, rcs: Any, p: Any) -> None:
        # Retained messages are sent right after SUBACK: give them a moment, then give up.
        threading.Timer(0.3, done.set).start()

    def on_message(cl: Any, u: Any, msg: Any) -> None:
        if msg.retain:
            got.append(msg.payload)
            done.set()

    c = mqtt_client(
        port,
        on_connect=lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1),
        on_subscribe=on_subscribe,
        on_message=on_message,
    )
    c.loop_start()
    try:
        done.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


# ---- persistent-session clients (fault tests: they ride out broker restarts) -----------------------


class SessionClient:
    """A paho MQTT v5 client with a stable id, clean_start=False and a session expiry, so that the broker
    keeps its subscriptions and queued QoS 1 messages across broker restarts and reconnects; paho
    reconnects on its own (fast) and resends its unacknowledged publishes. It never holds publishes in
    paho's own queue (max_queued 0).

    `subscriptions` are made on the first connect only: later connects must find the session present
    (`sessions_lost` counts those that did not, i.e. a broker that forgot its state).
    """

    def __init__(
        self,
        port: int,
        client_id: str,
        subscriptions: tuple[str, ...] = (),
        *,
        expiry_s: int = 3600,
        max_inflight: int = 1000,
    ) -> None:
        self.port = port
        self.subscriptions = subscriptions
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.connects = 0
        self.sessions_lost = 0
        self.subscribed = threading.Event()
        self._sub_mids: set[int] = set()
        self.infos: list[Any] = []
        self.client = mqtt_client(
            port,
            client_id,
            persistent=True,
            expiry_s=expiry_s,
            keepalive=10,
            max_inflight=max_inflight,
            max_queued=0,
            reconnect_delay=(0.1, 0.5),
            on_connect=self._on_connect,
            on_subscribe=self._on_subscribe,
            on_message=self._on_message,
        )
        self.client.loop_start()
        if subscriptions and not self.subscribed.wait(10):
            raise AssertionError(f"{client_id} did not subscribe to {subscriptions}")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        with self.lock:
            self.connects += 1
            present = bool(getattr(flags, "session_present", False))
            first = self.connects == 1
            if not first and not present:
                self.sessions_lost += 1
        if self.subscriptions and (first or not present):
            for t in self.subscriptions:
                _, mid = c.subscribe(t, qos=1)
                self._sub_mids.add(mid)

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, p: Any) -> None:
        self._sub_mids.discard(mid)
        if not self._sub_mids:
            self.subscribed.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=qos))

    def all_published(self) -> bool:
        from edge_lstm.service.mqtt import is_handed_over

        return all(is_handed_over(i) for i in self.infos)

    def wait_published(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.all_published():
            if time.monotonic() > deadline:
                n = sum(1 for i in self.infos if not i._published)
                raise AssertionError(f"{n} publishes not acknowledged by the broker within {timeout} s")
            time.sleep(0.02)

    def snapshot(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class OrderedPublisher:
    """A QoS 1 publisher (persistent session) that keeps its publication order across broker restarts.

    paho resends its unacknowledged publishes after a reconnect from the network thread, and a
    `publish()` from another thread in the window between the new socket and the CONNACK goes out
    *before* those resends: the broker then has a stream's newer readings ahead of older ones, and the
    daemon rightly rejects the older ones as `out_of_order` (measured: 6 of 3000 readings in one run).
    That is a property of the sensor's client, not of the daemon, so this publisher runs paho's loop and
    its publishing in one thread: after a reconnect paho's resends (in order) happen before anything new.
    """

    def __init__(self, port: int, client_id: str, *, expiry_s: int = 3600) -> None:
        self.port = port
        self.connected = False
        self.connects = 0
        self.sessions_lost = 0
        self.reconnect_attempts = 0
        self.infos: list[Any] = []
        self.client = mqtt_client(
            port,
            client_id,
            persistent=True,
            expiry_s=expiry_s,
            keepalive=10,
            max_inflight=10_000,  # never "queued" in paho: every publish goes out in order
            max_queued=0,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
        )
        self._ensure_connected(time.monotonic() + 10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        if self.connects > 1 and not getattr(flags, "session_present", False):
            self.sessions_lost += 1
        self.connected = True

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected = False

    def _ensure_connected(self, deadline: float) -> None:
        while not self.connected:
            if time.monotonic() > deadline:
                raise AssertionError("publisher could not (re)connect")
            rc = self.client.loop(timeout=0.02)
            if rc != 0 and not self.connected:
                try:
                    self.reconnect_attempts += 1
                    self.client.reconnect()
                except OSError:
                    time.sleep(0.1)

    def pump(self, seconds: float) -> None:
        """Run the network loop (and reconnect) for about `seconds`."""
        end = time.monotonic() + seconds
        while True:
            self._ensure_connected(time.monotonic() + 60)
            left = end - time.monotonic()
            if left <= 0:
                return
            self.client.loop(timeout=min(left, 0.01))

    def publish(self, topic: str, payload: bytes) -> None:
        self._ensure_connected(time.monotonic() + 60)
        self.infos.append(self.client.publish(topic, payload, qos=1))

    def run(self, messages: list[tuple[str, bytes]], rate: float) -> None:
        """Publish `messages` in order at `rate` per second (catching up after an outage)."""
        t0 = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                self.pump(wait)
            self.publish(topic, payload)

    def wait_published(self, timeout: float) -> None:
        from edge_lstm.service.mqtt import is_handed_over

        deadline = time.monotonic() + timeout
        while not all(is_handed_over(i) for i in self.infos):
            if time.monotonic() > deadline:
                n = sum(1 for i in self.infos if not is_handed_over(i))
                raise AssertionError(f"{n} publishes not acknowledged by the broker within {timeout} s")
            self.pump(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(timeout=0.1)
