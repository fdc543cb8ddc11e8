"""A small typed adapter over paho-mqtt 2.x that keeps the broker at the edge of the daemon.

Rules this module keeps (docs/operations.md, "How messages flow"):

* `on_message` (and `on_reading`, the paho adapter's path for plain QoS 1 readings) only appends an
  `Inbound` to a `queue.SimpleQueue` (C-implemented, never blocks, takes no lock of ours). No decoding, no publishing:
  work in paho's network thread starves keepalive and throttles the socket to a few hundred messages/s,
  and the broker then queues and drops (paho #379, #328; paho holds its locks during callbacks, #346).
* Persistent session: a stable client id, MQTT v5 `clean_start=False` + SessionExpiryInterval (3.1.1:
  `clean_session=False`), QoS 1 subscription, made in `on_connect` so it survives reconnects.
* `manual_ack=True`: a reading is acked only once its result is with the broker; the inbound queue is
  bounded by backpressure (`_hold`), as mosquitto ignores Receive Maximum on a resumed session.
* Availability: last will `offline` (retained), `online` (retained) published on every (re)connect.
paho's client subclass and every other touch of paho's internals are in the adapter (`paho_adapter/`).
"""

from __future__ import annotations

import queue
import ssl
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..ports import WAKE, Inbound
from .batching import Doorbell
from .config import MqttSettings
from .logs import get_logger
from .paho_adapter import BatchedClient, callbacks, is_handed_over, raw_topic, settle_dropped_qos0

ONLINE = b"online"
OFFLINE = b"offline"

__all__ = ["OFFLINE", "ONLINE", "WAKE", "Inbound", "MqttLink", "is_handed_over"]


SESSION_TAKEN_OVER = 142  # MQTT v5 DISCONNECT reason: another client connected with our client id


class MqttLink:
    """The daemon's MQTT connection. Thread-safe for `publish`/`ack` from the worker thread."""

    def __init__(
        self,
        cfg: MqttSettings,
        inbox: queue.SimpleQueue[Any],
        subscription: str | Sequence[str],
        *,
        max_queue: int = 10_000,
    ) -> None:
        self.cfg = cfg
        self.inbox = inbox
        # The first filter is the readings' (at cfg.qos_in); any others (a command topic,
        # homeassistant/status, ...) are subscribed at QoS 1 in the same SUBSCRIBE.
        subs = (subscription,) if isinstance(subscription, str) else tuple(subscription)
        if not subs:
            raise ValueError("MqttLink needs at least one subscription")
        self.subscription = subscription  # as given; `subscriptions`: every filter, the readings' first
        self.subscriptions: tuple[str, ...] = tuple(dict.fromkeys(subs))
        self._own_topics = frozenset(t.encode() for t in self.subscriptions[1:])  # the daemon's own topics
        # Backpressure (see _hold): stop reading at max_queue waiting readings, resume at half.
        self.max_queue = max_queue
        self.resume_below = max_queue // 2
        self.intake_paused = False  # set by the worker while it waits for PUBACKs (see _hold)
        self.read_on = False  # ... at its hard cap of unacknowledged readings
        self.doorbell = Doorbell()  # rung when the inbox holds what the worker's batch waits for
        self.max_inbox = 0  # the most readings ever waiting for the worker
        self.holds = 0  # times the network thread stopped reading because the worker was behind
        self.held_s = 0.0
        self.log = get_logger("edge_lstm.mqtt")
        self.v5 = cfg.protocol == "5"
        self.generation = 0
        self.connected = False
        self.subscribed = False
        self.session_present = False
        self.accepting = True
        self.received = 0  # messages appended to the inbox
        self.refused = 0  # messages that arrived after accepting stopped (left unacked: redelivered)
        self.connects = 0
        self.connect_failures = 0
        self.publish_failures = 0  # PUBACKs with a failure reason code (results the broker refused)
        # Another client with our client id (see _takeover): takeovers seen, and whether we back off.
        self.client_id_conflicts = 0
        self.conflict = False
        self._connected_at = 0.0
        self._short_streak = 0  # consecutive connections the broker ended within _short_s
        self._short_s = max(5.0, 3 * cfg.reconnect_min_delay_s)
        self._stable_s = max(60.0, 2 * cfg.reconnect_max_delay_s)
        self._closing = False
        self._wake_pending = False
        self._sub_mid: int | None = None

        client_kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": cfg.client_id,
            "protocol": MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            "manual_ack": True,
        }
        if not self.v5:
            client_kwargs["clean_session"] = False
        c = BatchedClient(**client_kwargs)
        self.client = c
        c.reads_due = self.doorbell  # small reads wait in the socket while the worker sleeps out a window
        c.will_set(cfg.status_topic, OFFLINE, qos=1, retain=True)
        password = cfg.resolved_password()
        if cfg.username is not None or password is not None:
            c.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            t = cfg.tls
            c.tls_set(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            c.tls_insecure_set(t.insecure)
        self._set_backoff(cfg.reconnect_min_delay_s)
        # No paho window: with one, every PUBACK runs `_update_inflight`, a scan of all outgoing messages
        # (O(outstanding) per PUBACK, the largest entry in the profile; docs/performance.md). The daemon
        # bounds what is outstanding itself: it stops taking readings while too many are unacknowledged
        # (Daemon.max_unacked), and results are only produced for unacknowledged readings.
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_message, c.on_reading = self._on_message, self._on_reading
        c.on_publish, c.on_handed_over = self._on_publish, self._wake  # plain PUBACKs: just the wake-up

    # ---- lifecycle (worker / main thread) -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho's thread retries with capped backoff until it succeeds."""
        cfg = self.cfg
        kwargs: dict[str, Any] = {}
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = cfg.session_expiry_s
            props.ReceiveMaximum = cfg.receive_maximum
            # clean_start=False on every connect, also the first: the default
            # MQTT_CLEAN_START_FIRST_ONLY would wipe the queued readings at each process start (paho #877).
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive, **kwargs)
        self.client.loop_start()

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False, correlation: bytes | None = None
    ) -> paho.MQTTMessageInfo:
        props = None
        if correlation is not None and self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        # paho refuses (rc QUEUE_SIZE, message dropped) when the 16-bit message id wraps onto one still
        # in flight; the next id is free, so retry rather than leave a result that never completes.
        for _ in range(8):
            if info.rc != paho.MQTT_ERR_QUEUE_SIZE:
                break
            info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos == 0:
            settle_dropped_qos0(info)  # or the reading waiting for a dropped QoS 0 message never is acked
        return info

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Publishes and acks made inside go out with one wake-up of the network thread (BatchedClient)."""
        with self.client.batch():
            yield

    def kick(self, min_age_s: float = 5.0) -> int:
        """Called from the worker every few seconds: resend QoS 1/2 messages older than `min_age_s` that
        sit unsent while connected (`BatchedClient.repair_window`). Returns how many were stuck (0
        normally; then it changes nothing)."""
        r = self.client.repair_window(min_age_s)
        if r is None:
            return 0
        self.log.warning("mqtt_publish_kicked", **asdict(r))  # stuck, inflight_counter/_actual, oldest_age_s
        return r.stuck

    handed_over = staticmethod(is_handed_over)  # per pending result and check: no extra call

    def ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)

    def stop_accepting(self) -> None:
        """Leave later messages unacknowledged (the broker redelivers them to the next session)."""
        self.accepting = False

    def close(self, timeout: float = 5.0) -> bool:
        """Publish `offline` (retained: a clean DISCONNECT suppresses the will), disconnect, stop the
        network thread. Returns True if `offline` was handed to the broker."""
        ok = False
        self._closing = True
        if self.connected:
            info = self.client.publish(self.cfg.status_topic, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.connected and not is_handed_over(info):
                time.sleep(0.01)
            ok = is_handed_over(info)
        self.client.disconnect()
        self.client.loop_stop()
        return ok

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.subscribed

    # ---- paho callbacks (network thread): keep them tiny ------------------------------------------

    def _wake(self) -> None:
        # Not in a light load's window: the worker acks what is ready with that batch (performance.md, round 9).
        if not (self._wake_pending or (self.doorbell.light and self.doorbell.read_by > time.monotonic())):
            self._wake_pending = True
            self.inbox.put(WAKE)

    def woken(self) -> None:
        """The worker took a WAKE from the queue."""
        self._wake_pending = False

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.log.error("mqtt_connect_refused", reason=str(reason_code), host=self.cfg.host, port=self.cfg.port)
            return
        self.generation += 1
        self.connects += 1
        self.connected = True
        self._connected_at = time.monotonic()
        self.session_present = callbacks.session_present(flags)
        client.publish(self.cfg.status_topic, ONLINE, qos=1, retain=True)
        topics: list[tuple[str, int]] = [(self.subscriptions[0], self.cfg.qos_in)]
        topics += [(t, 1) for t in self.subscriptions[1:]]
        rc, self._sub_mid = client.subscribe(topics)
        self.log.info(
            "mqtt_connected",
            host=self.cfg.host,
            port=self.cfg.port,
            client_id=self.cfg.client_id,
            protocol=self.cfg.protocol,
            session_present=self.session_present,
            connection=self.generation,
        )
        self._wake()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around reconnect() (loop_forever), so the error
        # (connection refused, TLS certificate/handshake failure, DNS) is the exception being handled.
        err = sys.exc_info()[1]
        self.connect_failures += 1
        self.log.warning(
            "mqtt_connect_failed",
            host=self.cfg.host,
            port=self.cfg.port,
            tls=self.cfg.tls.enabled,
            error=f"{type(err).__name__}: {err}" if err else "unknown",
            attempt=self.connect_failures,
        )

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid != self._sub_mid:
            return
        bad = {t: str(rc) for t, rc in zip(self.subscriptions, reason_codes, strict=False) if rc.is_failure}
        if bad or len(reason_codes) < len(self.subscriptions):
            self.log.error("mqtt_subscribe_refused", topic=self.subscriptions[0], reasons=bad)
            return
        self.subscribed = True
        extra = {"also": list(self.subscriptions[1:])} if len(self.subscriptions) > 1 else {}
        self.log.info("mqtt_subscribed", topic=self.subscriptions[0], qos=self.cfg.qos_in, **extra)
        self._wake()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.connected
        self.connected = False
        self.subscribed = False
        if was:
            lasted = time.monotonic() - self._connected_at
            # Our own stop is routine (info: `journalctl -p warning` stays quiet); a lost connection is not.
            level = self.log.info if self._closing else self.log.warning
            level("mqtt_disconnected", reason=str(reason_code), connected_s=round(lasted, 1))
            if not self._closing:
                self._takeover(reason_code, callbacks.from_server(flags), lasted)
        self._wake()

    def _takeover(self, reason_code: Any, from_server: bool, lasted: float) -> None:
        """Detect another client with our client id, and back off instead of ping-ponging with it.

        The broker ends the older session whenever a client connects with the same id: two daemons
        with one `mqtt.client_id` take the session from each other every reconnect delay. MQTT v5 says
        so (DISCONNECT reason 142 "Session taken over"); 3.1.1 just closes the socket, so there the
        symptom is the broker ending two connections in a row shortly after they were made. While in
        conflict, reconnects wait `reconnect_max_delay_s`; a connection that lasts `_stable_s` ends it.
        """
        value = callbacks.reason_value(reason_code)
        if lasted >= self._stable_s:
            self._short_streak = 0
            if self.conflict:
                self.conflict = False
                self._set_backoff(self.cfg.reconnect_min_delay_s)
                self.log.info("client_id_conflict_over", client_id=self.cfg.client_id, connected_s=round(lasted))
            return
        if value == SESSION_TAKEN_OVER:
            evidence = "session taken over"
        elif value != 0 and not from_server and lasted < self._short_s:
            self._short_streak += 1
            if self._short_streak < 2:
                return
            evidence = "connection ended by the broker shortly after connecting, repeatedly"
        else:
            self._short_streak = 0
            return
        self.client_id_conflicts += 1
        if not self.conflict:
            self.conflict = True
            self._set_backoff(self.cfg.reconnect_max_delay_s)
            self.log.warning(
                "client_id_conflict",
                client_id=self.cfg.client_id,
                evidence=evidence,
                reconnect_delay_s=max(1, int(self.cfg.reconnect_max_delay_s)),
                hint="another client connects with this mqtt.client_id; give each daemon its own",
            )

    def _set_backoff(self, min_delay_s: float) -> None:
        """paho's reconnect delay: from `min_delay_s`, doubling up to `reconnect_max_delay_s`."""
        high = max(1, int(self.cfg.reconnect_max_delay_s))
        self.client.reconnect_delay_set(min_delay=min(high, max(1, int(min_delay_s))), max_delay=high)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Nothing but an append: see the module docstring.
        topic = raw_topic(msg)  # decoding is the worker's job
        m = Inbound(topic, bytes(msg.payload), msg.mid, msg.qos, time.time(), self.generation)
        if topic in self._own_topics and self.v5:  # a command may ask for a v5 reply (rare: not readings)
            m.response_topic, m.correlation = callbacks.reply_to(msg)
        self._append(m)

    def _on_reading(self, topic: bytes, payload: bytes, mid: int) -> None:
        """A QoS 1 message without properties (BatchedClient's fast path): a reading, or a plain command."""
        self._append(Inbound(topic, payload, mid, 1, time.time(), self.generation))

    def _append(self, m: Inbound) -> None:
        if not self.accepting:
            self.refused += 1
            return
        self.inbox.put(m)
        self.received += 1
        waiting = self.inbox.qsize()
        if waiting >= self.doorbell.at:
            self.doorbell.arrived(waiting)
        if waiting > self.max_inbox:
            self.max_inbox = waiting
        if waiting >= self.max_queue:
            self._hold()

    def _hold(self) -> None:
        """Backpressure: the worker is behind, so stop reading from the broker until it has caught up.

        This runs in paho's network thread, so not returning means the socket is not read: TCP pushes
        back and the broker keeps further readings in its queue for us (`max_queued_messages`), instead
        of our memory growing without limit. Receive Maximum should do this, but mosquitto 2.0.11 does
        not honour it once acks flow (mosquitto #2301; measured, docs/operations.md). The worker drains
        the queue without the network thread, so this cannot deadlock; it waits at most half the
        keepalive at a time so that paho can still send PINGREQ between two holds.
        """
        self.holds += 1
        t0 = time.monotonic()
        limit = t0 + self.cfg.keepalive / 2
        # While the worker waits for PUBACKs (which only this thread reads: Daemon.max_unacked, or a
        # checkpoint), keep reading, or both threads would wait for each other until `limit`; but never
        # beyond 1.5 x max_queue waiting readings, so memory stays bounded whatever the broker sends; except
        # at the worker's hard cap (`read_on`, Daemon._unacked_pause): its PUBACKs sit behind readings.
        cap = self.max_queue + self.resume_below
        while self.accepting and time.monotonic() < limit:
            waiting = self.inbox.qsize()
            paused = self.intake_paused and (waiting < cap or self.read_on)
            if waiting <= self.resume_below or paused:
                break
            time.sleep(0.002)
        self.held_s += time.monotonic() - t0

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # A v5 PUBACK can carry a failure (e.g. not authorised to publish on the output topic).
        # Retrying cannot fix that: count and log it (cheap, rare) so it is visible, not silent.
        if callbacks.is_failure(reason_code):
            self.publish_failures += 1
            if self.publish_failures <= 10 or self.publish_failures % 1000 == 0:
                self.log.warning("mqtt_publish_refused", mid=mid, reason=str(reason_code), count=self.publish_failures)
        self._wake()
