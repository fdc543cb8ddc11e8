"""MqttLink's callbacks without a broker: several subscriptions, session takeover detection (issue 8)."""

from __future__ import annotations

import queue
from typing import Any

import pytest
import structlog
from paho.mqtt.client import DisconnectFlags, MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from support.fakes import FakeLink

from edge_lstm.service.config import MqttSettings
from edge_lstm.service.mqtt import WAKE, MqttLink


def _link(subscription: str | list[str] = "sensors/+", **cfg: Any) -> MqttLink:
    return MqttLink(MqttSettings(client_id="unit", **cfg), queue.SimpleQueue(), subscription)  # never started


def _connect(link: MqttLink) -> None:
    link._on_connect(link.client, None, None, ReasonCode(PacketTypes.CONNACK, "Success"), None)


def _drop(link: MqttLink, reason: str | int, *, lasted: float = 1.0, from_server: bool = False) -> None:
    link._connected_at -= lasted
    rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if isinstance(reason, int) else None
    rc = rc or ReasonCode(PacketTypes.DISCONNECT, str(reason))
    link._on_disconnect(link.client, None, DisconnectFlags(from_server), rc, None)


def _delays(link: MqttLink) -> tuple[int, int]:
    return link.client._reconnect_min_delay, link.client._reconnect_max_delay


def test_subscriptions_accept_one_filter_or_several() -> None:
    assert _link().subscriptions == ("sensors/+",)
    link = _link(["sensors/+", "edge-lstm/command", "homeassistant/status", "sensors/+"])
    assert link.subscriptions == ("sensors/+", "edge-lstm/command", "homeassistant/status")
    with pytest.raises(ValueError):
        _link([])
    fake = FakeLink(MqttSettings(client_id="f"), queue.SimpleQueue(), ["a/+", "b"], 10)
    assert (fake.subscription, fake.subscriptions) == (["a/+", "b"], ("a/+", "b"))
    assert FakeLink(MqttSettings(client_id="f"), queue.SimpleQueue(), "a/+", 10).subscriptions == ("a/+",)


def test_subscribed_only_when_every_filter_is_granted() -> None:
    link = _link(["sensors/+", "edge-lstm/command"])
    ok, bad = ReasonCode(PacketTypes.SUBACK, identifier=1), ReasonCode(PacketTypes.SUBACK, identifier=0x87)
    link._sub_mid = 7
    with structlog.testing.capture_logs() as logs:
        link._on_subscribe(link.client, None, 7, [ok, bad], None)
        assert not link.subscribed
        link._on_subscribe(link.client, None, 7, [ok], None)  # one answer for two filters
        assert not link.subscribed
        link._on_subscribe(link.client, None, 7, [ok, ok], None)
        assert link.subscribed
    refused = [e for e in logs if e["event"] == "mqtt_subscribe_refused"]
    assert refused[0]["reasons"] == {"edge-lstm/command": "Not authorized"}
    assert [e["also"] for e in logs if e["event"] == "mqtt_subscribed"] == [["edge-lstm/command"]]


def test_session_taken_over_is_logged_once_and_backs_off_until_a_connection_lasts() -> None:
    link = _link(reconnect_min_delay_s=1, reconnect_max_delay_s=20)
    assert _delays(link) == (1, 20)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            _connect(link)
            _drop(link, 142, from_server=True)  # v5: "Session taken over"
        assert link.conflict and link.client_id_conflicts == 3
        assert _delays(link) == (20, 20)
        _connect(link)
        _drop(link, "Unspecified error", lasted=61)  # a connection that lasted: normal backoff again
        assert not link.conflict and _delays(link) == (1, 20)
    events = [e["event"] for e in logs if e["event"].startswith("client_id_conflict")]
    assert events == ["client_id_conflict", "client_id_conflict_over"]
    warning = next(e for e in logs if e["event"] == "client_id_conflict")
    assert warning["client_id"] == "unit" and warning["log_level"] == "warning"


def test_repeated_short_connections_count_as_a_takeover_without_a_reason_code() -> None:
    link = _link(protocol="3.1.1")
    _connect(link)
    _drop(link, "Unspecified error", lasted=30)  # a long connection lost: a broker restart, not a conflict
    _connect(link)
    _drop(link, "Unspecified error", lasted=0.5)  # once: could be anything
    assert not link.conflict
    _connect(link)
    _drop(link, "Unspecified error", lasted=1.0)  # twice in a row: another client with our id
    assert link.conflict and link.client_id_conflicts == 1


def test_other_disconnects_are_not_a_conflict() -> None:
    link = _link()
    for reason, from_server in (("Keep alive timeout", False), (0x8D, True), ("Unspecified error", False)):
        _connect(link)
        _drop(link, reason, lasted=0.5, from_server=from_server)
        _connect(link)
        _drop(link, 0x89 if from_server else "Success", lasted=0.5, from_server=from_server)
    _connect(link)
    link._closing = True  # our own close()
    _drop(link, "Unspecified error", lasted=0.5)
    assert not link.conflict and link.client_id_conflicts == 0


def test_an_arriving_reading_rings_the_doorbell_at_the_size_the_worker_waits_for() -> None:
    link = _link()
    msg = MQTTMessage(mid=1, topic=b"sensors/a")
    msg.qos, msg.payload = 1, b"{}"
    link.doorbell.at = 3  # the worker waits for 3 messages
    link._on_message(link.client, None, msg)
    link._on_message(link.client, None, msg)
    assert link.doorbell.rung == 0
    link._on_message(link.client, None, msg)
    assert link.doorbell.rung == 1 and link.inbox.qsize() == 3
    link._on_message(link.client, None, msg)  # rung once: the worker is awake now
    assert link.doorbell.rung == 1


def test_a_puback_wakes_the_worker_unless_it_steps_a_light_load_s_batch_soon_anyway() -> None:
    link = _link()
    link.doorbell.hold(600.0)  # the worker just took a batch below its target; the next is due later
    link._wake()
    assert link.inbox.qsize() == 0  # the acks go out with that batch's results
    link.doorbell.hold(0.0)  # a full batch (a backlog): acks as soon as PUBACKs arrive
    link._wake()
    link._wake()
    assert link.inbox.get_nowait() is WAKE and link.inbox.qsize() == 0  # once until the worker takes it
    link.woken()
    link.doorbell.hold(0.001)  # a light window that has ended
    link._wake()
    assert link.inbox.get_nowait() is WAKE
