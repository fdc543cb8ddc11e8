"""Home Assistant MQTT discovery: the retained config payloads that make each stream appear in Home
Assistant as a device with an alarm `binary_sensor` and `sensor`s for its score and likelihood.

Pure: payload and topic builders only; the daemon decides when to publish them (on a stream's first
result, and again whenever Home Assistant announces `online` on its status topic). Payloads follow
Home Assistant's documented MQTT discovery schema (abbreviations not used, so they stay readable).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .. import __version__

_SAFE = re.compile(r"[^a-zA-Z0-9]")


def object_id(stream: str) -> str:
    """An id made of `[a-zA-Z0-9_-]` only, different for different stream ids (injective).

    Letters and digits are kept; every other character becomes `_` followed by its code point in hex
    and `-` (so `_` itself is escaped and the mapping can be undone); ids longer than 64 characters are
    cut and suffixed with a hash of the whole stream id."""
    out = _SAFE.sub(lambda m: f"_{ord(m.group()):x}-", stream)
    if len(out) > 64:
        out = out[:47] + "-" + hashlib.sha256(stream.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return out


@dataclass(frozen=True)
class Discovery:
    prefix: str  # Home Assistant's discovery prefix (default "homeassistant")
    node_id: str  # this daemon (its MQTT client id, made safe): several daemons never collide
    status_topic: str  # our availability topic (online / offline, retained)
    model: str  # the model's name, shown as the device model

    def announcements(
        self, stream: str, result_topic: str, alarm_topic: str | None, likelihood: bool
    ) -> list[tuple[str, bytes]]:
        """(topic, retained payload) for every entity of `stream`."""
        oid = object_id(stream)
        node = object_id(self.node_id)
        device = {
            "identifiers": [f"edge_lstm_{node}_{oid}"],
            "name": stream,
            "model": self.model,
            "manufacturer": "edge-lstm",
        }
        common = {
            "device": device,
            "origin": {"name": "edge-lstm", "sw_version": __version__},
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
        }
        out: list[tuple[str, bytes]] = []

        def add(component: str, key: str, config: dict[str, object]) -> None:
            unique = f"edge_lstm_{node}_{oid}_{key}"
            doc = {**config, **common, "unique_id": unique, "object_id": unique}
            topic = f"{self.prefix}/{component}/{node}/{oid}_{key}/config"
            out.append((topic, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()))

        if alarm_topic is not None:
            add(
                "binary_sensor",
                "alarm",
                {
                    "name": "Alarm",
                    "device_class": "problem",
                    "state_topic": alarm_topic,
                    "value_template": "{{ value_json.state }}",
                    "payload_on": "raised",
                    "payload_off": "cleared",
                },
            )
        add(
            "sensor",
            "score",
            {
                "name": "Anomaly score",
                "state_topic": result_topic,
                "value_template": "{{ value_json.score }}",
                "state_class": "measurement",
            },
        )
        if likelihood:
            add(
                "sensor",
                "likelihood",
                {
                    "name": "Anomaly likelihood",
                    "state_topic": result_topic,
                    "value_template": "{{ value_json.likelihood }}",
                    "state_class": "measurement",
                },
            )
        return out
