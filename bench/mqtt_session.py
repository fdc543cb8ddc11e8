"""bench/bench_mqtt.py's paho clients and persistent sessions on the private broker, and its readings' JSON."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

FEATURES = ("temperature", "vibration", "current")  # the packaged model's
SUB = "sensors/+"
RECEIVE_MAXIMUM = 1000  # the daemon's default mqtt.receive_maximum, used for the relay too


def client(client_id: str = "", **kw: Any) -> paho.Client:
    return paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        **kw,
    )


def connect_props(receive_maximum: int = RECEIVE_MAXIMUM) -> Properties:
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = receive_maximum
    return p


def drop_session(port: int, client_id: str) -> None:
    """End a consumer's persistent session (clean start, expiry 0): otherwise the broker goes on
    queueing every later reading for it, and later consumers would pay for the stopped ones."""
    c = client(client_id)
    done = threading.Event()
    c.on_connect = lambda *_: done.set()
    c.connect("127.0.0.1", port, clean_start=True)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def make_session(port: int, client_id: str) -> None:
    """A persistent session subscribed to sensors/+ at QoS 1, left offline: readings queue for it."""
    c = client(client_id)
    done = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe(SUB, qos=1)
    c.on_subscribe = lambda *_: done.set()
    c.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    c.disconnect()
    c.loop_stop()


def reading(stream: str, ts: float, i: int) -> bytes:
    return json.dumps(
        {"ts": ts, **{f: round(20.0 + (i * 7 + k * 13) % 17 * 0.5, 3) for k, f in enumerate(FEATURES)}}
    ).encode()
