"""Home Assistant MQTT discovery: the retained config payloads that make each stream a device with an
alarm `binary_sensor` and `sensor`s for its score, likelihood and deviation, and the daemon itself a
device with its counters (docs/homeassistant.md shows what appears in Home Assistant).

Pure: topic and payload builders only. The daemon publishes a stream's configs before the stream's
first Home Assistant state (service/ha_states.py), again whenever Home Assistant announces `online` on
its status topic, and empty ones when a stream is removed. Keys follow Home Assistant's MQTT discovery
schema, unabbreviated so they stay readable; the HA versions whose source was checked for each key are
listed in docs/homeassistant.md.

Ids, and why each is what it is:
- unique ids, device identifiers and config topics use `object_id(stream)`: injective (two streams never
  share an entity) and made of `[a-zA-Z0-9_-]` as config topics require; they include `node_id` (a
  setting, default `edge_lstm`), never the host name, so they survive restarts and host renames;
- entity ids are readable (`sensor.pump_1_score`): `default_entity_id` (HA 2025.10+), and on older HA
  the same id follows from the device name (the stream) and the entity name (`Score`), since MQTT
  entities name themselves after their device. No `object_id`: HA 2025.10 logs a deprecation warning for
  it and 2026.4 ignores it, and older HA derives the same readable id without it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

from .. import __version__

_SAFE = re.compile(r"[^a-zA-Z0-9]")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# Letters NFKD does not decompose, spelt as Home Assistant's slugify (unidecode) spells them.
_TRANSLIT = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "þ": "th"}
)
MAX_ENTITY_ID = 64  # readable entity ids are cut (with a hash) to this many characters
STREAM_KEYS = ("alarm", "score", "likelihood", "deviation")  # every stream entity, in announcement order


def object_id(stream: str) -> str:
    """An id made of `[a-zA-Z0-9_-]` only, different for different stream ids (injective).

    Letters and digits are kept; every other character becomes `_` followed by its code point in hex
    and `-` (so `_` itself is escaped and the mapping can be undone); ids longer than 64 characters are
    cut and suffixed with a hash of the whole stream id."""
    out = _SAFE.sub(lambda m: f"_{ord(m.group()):x}-", stream)
    if len(out) > 64:
        out = out[:47] + "-" + _digest(stream, 16)
    return out


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def slug(text: str) -> str:
    """Lower-case ASCII letters, digits and single `_`, as Home Assistant slugifies names for entity ids
    (`Halle 2.Pumpe ü` → `halle_2_pumpe_u`); "" when nothing of `text` is left."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_SLUG.sub("_", ascii_only.lower()).strip("_")


def default_entity_id(domain: str, name: str, key: str) -> str:
    """`<domain>.<slug(name)>_<key>`, at most MAX_ENTITY_ID characters: a name too long (or with nothing
    readable in it) is cut and ends in a hash of the whole name, so ids stay distinct."""
    room = MAX_ENTITY_ID - len(domain) - len(key) - 2
    s = slug(name)
    if not s or len(s) > room:
        s = (s[: room - 7].rstrip("_") + "_" + _digest(name, 6)).lstrip("_")
    return f"{domain}.{s}_{key}"


def _json(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Entity:
    component: str  # "sensor" | "binary_sensor"
    key: str  # the entity's id within its device; its name slugifies to it
    name: str
    config: dict[str, object]  # the component's own keys (state topic, template, class, precision...)


def stream_entities(state_topic: str, expire_after_s: int) -> list[Entity]:
    """A stream's entities, all reading its Home Assistant state topic (ha_states.stream_state)."""
    expire: dict[str, object] = {"expire_after": expire_after_s} if expire_after_s else {}

    def number(key: str, name: str, precision: int, icon: str) -> Entity:
        tpl = "{{ value_json." + key + " }}"  # JSON null renders None: Home Assistant shows "unknown"
        return Entity(
            "sensor",
            key,
            name,
            {
                "state_topic": state_topic,
                "value_template": tpl,
                "state_class": "measurement",
                "suggested_display_precision": precision,
                "icon": icon,
                **expire,
            },
        )

    alarm = {
        "state_topic": state_topic,
        "value_template": "{{ value_json.alarm }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "problem",
        **expire,
    }
    return [
        Entity("binary_sensor", "alarm", "Alarm", alarm),
        number("score", "Score", 3, "mdi:chart-bell-curve"),
        number("likelihood", "Likelihood", 3, "mdi:percent-circle-outline"),
        number("deviation", "Deviation", 2, "mdi:sine-wave"),
    ]


def daemon_entities(stats_topic: str) -> list[Entity]:
    """The daemon's own entities, read from its retained stats topic (service/stats.py)."""

    def stat(key: str, name: str, template: str, **extra: object) -> Entity:
        return Entity("sensor", key, name, {"state_topic": stats_topic, "value_template": template, **extra})

    count: dict[str, object] = {"state_class": "measurement", "suggested_display_precision": 0}
    diagnostic: dict[str, object] = {"entity_category": "diagnostic"}
    durable = "{{ 'ON' if value_json.durable else 'OFF' }}"
    return [
        stat(
            "readings_per_second",
            "Readings per second",
            "{{ value_json.rate_per_s }}",
            unit_of_measurement="readings/s",
            state_class="measurement",
            suggested_display_precision=1,
            icon="mdi:speedometer",
        ),
        stat("live_streams", "Live streams", "{{ value_json.streams }}", icon="mdi:table-row", **count),
        stat(
            "spilled_streams",
            "Spilled streams",
            "{{ value_json.streams_spilled }}",
            icon="mdi:content-save-move",
            **count,
        ),
        stat(
            "backlog",
            "Backlog",
            "{{ value_json.unacked }}",
            unit_of_measurement="readings",
            icon="mdi:tray-full",
            **count,
        ),
        Entity(
            "binary_sensor",
            "durable",
            "Durable",
            {
                "state_topic": stats_topic,
                "value_template": durable,
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:harddisk",
                **diagnostic,
            },
        ),
        stat(
            "model",
            "Model",
            "{{ value_json.model.name }} {{ value_json.model.version }}",
            icon="mdi:brain",
            **diagnostic,
        ),
        stat("last_error", "Last error", "{{ value_json.last_error }}", icon="mdi:alert-circle-outline", **diagnostic),
        stat(
            "uptime",
            "Uptime",
            "{{ value_json.uptime_s }}",
            device_class="duration",
            unit_of_measurement="s",
            state_class="measurement",
            suggested_display_precision=0,
            **diagnostic,
        ),
    ]


@dataclass(frozen=True)
class Discovery:
    prefix: str  # Home Assistant's discovery prefix (default "homeassistant")
    node_id: str  # this daemon among others on the broker (`[a-zA-Z0-9_-]`); in unique ids and topics
    status_topic: str  # our availability topic (online / offline, retained)
    model: str  # the model's name, shown as the stream devices' model
    model_version: str = ""
    expire_after_s: int = 0  # 0: not sent (entities never expire on their own)
    legacy_node: str = ""  # object_id(MQTT client id): the node earlier versions announced under

    @property
    def daemon_device_id(self) -> str:
        return self.node_id  # stream devices are `<node>_<object_id>`: never equal to this

    @property
    def daemon_name(self) -> str:
        return "edge-lstm" if self.node_id == "edge_lstm" else f"edge-lstm {self.node_id}"

    def _config(self, device_name: str, device: dict[str, object], entity: Entity, uid_part: str) -> bytes:
        doc: dict[str, object] = {
            "name": entity.name,
            "unique_id": f"{self.node_id}_{uid_part}_{entity.key}",
            "default_entity_id": default_entity_id(entity.component, device_name, entity.key),
            **entity.config,
            "availability_topic": self.status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": {"name": "edge-lstm", "sw_version": __version__},
        }
        return _json(doc)

    def _topic(self, component: str, uid_part: str, key: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{uid_part}_{key}/config"

    def stream_configs(self, stream: str, state_topic: str) -> list[tuple[str, bytes]]:
        """(topic, retained payload) for every entity of `stream`."""
        oid = object_id(stream)
        device: dict[str, object] = {
            "identifiers": [f"{self.node_id}_{oid}"],
            "name": stream,
            "model": self.model,
            "manufacturer": "edge-lstm",
            "via_device": self.daemon_device_id,
        }
        if self.model_version:
            device["sw_version"] = self.model_version
        return [
            (self._topic(e.component, oid, e.key), self._config(stream, device, e, oid))
            for e in stream_entities(state_topic, self.expire_after_s)
        ]

    def stream_removal(self, stream: str) -> list[tuple[str, bytes]]:
        """Empty retained configs for every entity of `stream`: Home Assistant deletes them (and the
        device once it has no entity left)."""
        oid = object_id(stream)
        comp = {e.key: e.component for e in stream_entities("", 0)}
        return [(self._topic(comp[k], oid, k), b"") for k in STREAM_KEYS]

    def legacy_removal(self, stream: str) -> list[tuple[str, bytes]]:
        """Empty retained configs on the topics earlier versions announced `stream` on (node = the MQTT
        client id, which held the host name): without this, upgrading would leave duplicates."""
        if not self.legacy_node or self.legacy_node == self.node_id:
            return []
        oid = object_id(stream)
        old = [("binary_sensor", "alarm"), ("sensor", "score"), ("sensor", "likelihood")]
        return [(f"{self.prefix}/{c}/{self.legacy_node}/{oid}_{k}/config", b"") for c, k in old]

    def daemon_configs(self, stats_topic: str) -> list[tuple[str, bytes]]:
        """(topic, retained payload) for the daemon device's entities (none without a stats topic)."""
        if not stats_topic:
            return []
        device: dict[str, object] = {
            "identifiers": [self.daemon_device_id],
            "name": self.daemon_name,
            "model": "edge-lstm daemon",
            "manufacturer": "edge-lstm",
            "sw_version": __version__,
        }
        name = self.daemon_name
        return [
            (self._topic(e.component, "daemon", e.key), self._config(name, device, e, "daemon"))
            for e in daemon_entities(stats_topic)
        ]
