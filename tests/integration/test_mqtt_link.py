"""MqttLink.publish never leaves a result that can't complete; kick() repairs a stuck paho window."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from support.mqtt import Publisher

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.config import MqttSettings
from edge_lstm.service.mqtt import MqttLink, is_handed_over


def test_qos0_publish_while_disconnected_counts_as_handed_over() -> None:
    """paho drops a QoS 0 message it cannot send and never completes its info: the link does."""
    link = MqttLink(MqttSettings(client_id="t-q0"), queue.SimpleQueue(), "sensors/+")  # never started
    info0 = link.publish("edge-lstm/scores/x", b"{}", qos=0)
    assert info0.rc == paho.MQTT_ERR_NO_CONN and is_handed_over(info0)
    info1 = link.publish("edge-lstm/scores/x", b"{}", qos=1)  # kept by paho, sent after connecting
    assert info1.rc == paho.MQTT_ERR_NO_CONN and not is_handed_over(info1)
    assert link.kick(min_age_s=0) == 0  # not connected: nothing to repair


def _wait(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def _socket(link: MqttLink) -> socket.socket:
    """The link's connected TCP socket."""
    sock = link.client.socket()
    assert isinstance(sock, socket.socket), sock
    return sock


@pytest.mark.integration
@pytest.mark.parametrize("state", ["queued", "publish"])
def test_kick_sends_messages_stuck_while_connected(broker: PrivateBroker, state: str) -> None:
    """The stuck state: window counter full with nothing in flight, or messages never resent."""
    link = MqttLink(
        MqttSettings(port=broker.port, client_id=f"t-kick-{state}", max_inflight=10),
        queue.SimpleQueue(),
        "nothing/here",
    )
    link.start()
    try:
        assert link.wait_connected(10)
        c = link.client
        assert _wait(lambda: not c._out_messages)  # `online` confirmed
        assert link.kick(min_age_s=0) == 0  # healthy: nothing to do
        # The link runs without paho's window (0); a window of 10 with a drifted counter holds the
        # messages unsent. "queued": kick() repairs that window; "publish": the messages are left in
        # state `publish` and kick() resends them with the link's real setting (no window).
        c._max_inflight_messages = 10
        with c._out_message_mutex:
            c._inflight_messages = c._max_inflight_messages  # a counter that drifted
        infos = [link.publish("t/kick", b"x", qos=1) for _ in range(25)]
        if state == "publish":
            with c._out_message_mutex:
                for m in c._out_messages.values():
                    m.state = paho.mqtt_ms_publish  # as if a CONNACK resend had been skipped
                c._max_inflight_messages = 0
                c._inflight_messages = 0
        time.sleep(0.3)
        assert not any(is_handed_over(i) for i in infos)  # stuck: no PUBACK will ever come
        assert link.kick(min_age_s=60) == 0  # too young to call stuck
        assert link.kick(min_age_s=0) == 25
        assert _wait(lambda: all(is_handed_over(i) for i in infos))
        assert c._inflight_messages == 0
    finally:
        link.close(timeout=2)


@pytest.mark.integration
def test_several_subscriptions_in_one_subscribe_and_again_after_a_reconnect(
    broker: PrivateBroker, publisher: Callable[[int], Publisher]
) -> None:
    """Readings at qos_in, the extra filters at QoS 1; re-subscribed on every connect."""
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    link = MqttLink(
        MqttSettings(port=broker.port, client_id="t-subs", reconnect_min_delay_s=1),
        inbox,
        ["sensors/+", "edge-lstm/command", "homeassistant/status"],
    )
    link.start()
    try:
        assert link.wait_connected(10)
        pub = publisher(broker.port)
        for topic in ("sensors/a", "edge-lstm/command", "homeassistant/status", "other/x"):
            pub.send(topic, b"m", qos=1)
        pub.flush()
        got: set[bytes] = set()
        assert _wait(lambda: _drain(inbox, got) >= {b"sensors/a", b"edge-lstm/command", b"homeassistant/status"})
        _socket(link).shutdown(socket.SHUT_RDWR)  # connection lost: paho reconnects and subscribes
        assert _wait(lambda: link.connects == 2 and link.subscribed, timeout=10)
        pub.send("edge-lstm/command", b"again", qos=1)
        pub.flush()
        assert _wait(lambda: b"edge-lstm/command" in _drain(inbox, set()))
        assert b"other/x" not in got
    finally:
        link.close(timeout=2)


def _drain(inbox: queue.SimpleQueue[object], into: set[bytes]) -> set[bytes]:
    while True:
        try:
            m = inbox.get_nowait()
        except queue.Empty:
            return into
        topic = getattr(m, "topic", None)
        if topic is not None:
            into.add(topic)


@pytest.mark.integration
def test_the_broker_connection_has_nagle_off_after_every_connect(broker: PrivateBroker) -> None:
    """TCP_NODELAY on the daemon's socket (paho does not set it): a batch's acks, written just after its
    results, must not wait for the broker's ACK of them. Set on each new socket, so after a reconnect too."""
    link = MqttLink(MqttSettings(port=broker.port, client_id="t-nodelay"), queue.SimpleQueue(), "nothing/here")
    link.start()
    try:
        assert link.wait_connected(10)
        sock = _socket(link)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        sock.shutdown(socket.SHUT_RDWR)  # the connection drops: paho reconnects on a new socket
        assert _wait(lambda: link.client.socket() not in (None, sock) and link.subscribed, 15)
        assert _socket(link).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        link.close()
