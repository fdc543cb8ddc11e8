"""What `service/mqtt.py` reads from the objects paho hands its callbacks, in one place.

paho 2.x passes flags, reason codes and properties whose shapes vary with the protocol version (MQTT
3.1.1 connections get no properties; a v5 message carries only the properties it was sent with, as
attributes that exist only then). The link reads them through these functions, so that a paho release
that changes a shape is met here, beside the rest of what this package knows of paho.
"""

from __future__ import annotations

import paho.mqtt.client as paho


def session_present(flags: paho.ConnectFlags) -> bool:
    """CONNACK: the broker kept our session (subscriptions and queued messages)."""
    return bool(getattr(flags, "session_present", False))


def from_server(flags: paho.DisconnectFlags) -> bool:
    """The disconnect came as a DISCONNECT packet from the broker (MQTT v5), not a closed socket."""
    return bool(getattr(flags, "is_disconnect_packet_from_server", False))


def reason_value(reason_code: object) -> int | None:
    """A reason code's number (e.g. 142, "Session taken over"); None when paho gave none."""
    value = getattr(reason_code, "value", None)
    return value if isinstance(value, int) else None


def is_failure(reason_code: object) -> bool:
    """A reason code that reports a failure (a v5 PUBACK refusing a publish, a refused CONNACK)."""
    return bool(getattr(reason_code, "is_failure", False))


def reply_to(msg: paho.MQTTMessage) -> tuple[str | None, bytes | None]:
    """A v5 request's response topic and correlation data (None where the message has none)."""
    props = getattr(msg, "properties", None)
    return getattr(props, "ResponseTopic", None), getattr(props, "CorrelationData", None)
