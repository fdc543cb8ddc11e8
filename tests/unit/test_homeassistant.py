"""Home Assistant MQTT discovery payloads, checked against HA's documented discovery schema (topic
format `<prefix>/<component>/<node_id>/<object_id>/config`, ids of `[a-zA-Z0-9_-]`, required keys of
`sensor` / `binary_sensor`, device and availability blocks). No Home Assistant needed."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from edge_lstm.service.homeassistant import Discovery, object_id

ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOPIC = re.compile(
    r"^(?P<prefix>[^/#+]+)/(?P<component>binary_sensor|sensor)/(?P<node>[a-zA-Z0-9_-]+)/(?P<obj>[a-zA-Z0-9_-]+)/config$"
)
SENSOR_KEYS = {"state_topic", "unique_id", "device", "availability_topic", "name", "value_template"}


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_object_ids_are_safe_and_injective(a: str, b: str) -> None:
    assert ID.match(object_id(a)) and len(object_id(a)) <= 64
    if a != b:
        assert object_id(a) != object_id(b)


def test_object_id_keeps_plain_names_readable() -> None:
    assert object_id("pump7") == "pump7"
    assert object_id("pump-7") == "pump_2d-7" and object_id("pump_7") == "pump_5f-7"


def test_announcements_follow_the_discovery_schema() -> None:
    d = Discovery("homeassistant", "edge-lstm-pi", "edge-lstm/status", "fitted-forecaster")
    out = d.announcements("pump/7 #a", "edge-lstm/scores/pump%2F7", "edge-lstm/alarms/pump%2F7", likelihood=True)
    kinds = []
    uniques = set()
    for topic, payload in out:
        m = TOPIC.match(topic)
        assert m, topic
        doc = json.loads(payload)
        assert SENSOR_KEYS <= doc.keys(), doc.keys()
        assert doc["availability_topic"] == "edge-lstm/status"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
        assert doc["device"]["identifiers"] and doc["device"]["name"] == "pump/7 #a"
        assert doc["origin"]["name"] == "edge-lstm" and doc["origin"]["sw_version"]
        assert ID.match(doc["unique_id"]) and doc["unique_id"] not in uniques
        uniques.add(doc["unique_id"])
        kinds.append((m["component"], doc["state_topic"]))
        if m["component"] == "binary_sensor":
            assert doc["device_class"] == "problem"
            assert (doc["payload_on"], doc["payload_off"]) == ("raised", "cleared")
            assert doc["value_template"] == "{{ value_json.state }}"
    assert kinds == [
        ("binary_sensor", "edge-lstm/alarms/pump%2F7"),
        ("sensor", "edge-lstm/scores/pump%2F7"),
        ("sensor", "edge-lstm/scores/pump%2F7"),
    ]


def test_no_likelihood_sensor_when_results_carry_none_and_no_alarm_without_alarm_topic() -> None:
    d = Discovery("ha", "node", "edge-lstm/status", "m")
    out = d.announcements("s", "edge-lstm/scores/s", None, likelihood=False)
    assert [t for t, _ in out] == ["ha/sensor/node/s_score/config"]
