"""Home Assistant MQTT discovery payloads, checked against HA's discovery schema as its source defines
it (docs/homeassistant.md lists the versions checked): topic format
`<prefix>/<component>/<node_id>/<object_id>/config`, ids of `[a-zA-Z0-9_-]`, the keys of `sensor` /
`binary_sensor`, device and availability blocks, readable `default_entity_id`s. No Home Assistant needed."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_lstm.service.config import ConfigError, load_settings
from edge_lstm.service.homeassistant import Discovery, default_entity_id, object_id, slug

ID = re.compile(r"^[a-zA-Z0-9_-]+$")
ENTITY_ID = re.compile(r"^(sensor|binary_sensor)\.[a-z0-9]+(_[a-z0-9]+)*$")  # HA's valid_entity_id, minus unicode
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


def test_readable_entity_ids_as_home_assistant_slugifies_names() -> None:
    assert default_entity_id("sensor", "pump-1", "score") == "sensor.pump_1_score"
    assert default_entity_id("sensor", "Halle 2.Pumpe ü", "score") == "sensor.halle_2_pumpe_u_score"
    assert default_entity_id("binary_sensor", "motor_7.B", "alarm") == "binary_sensor.motor_7_b_alarm"
    assert slug("Straße/Ærø — ł") == "strasse_aero_l"


@given(st.text(min_size=1, max_size=300), st.sampled_from(["alarm", "score", "likelihood", "deviation"]))
def test_entity_ids_are_valid_and_at_most_64_characters(name: str, key: str) -> None:
    for domain in ("sensor", "binary_sensor"):
        eid = default_entity_id(domain, name, key)
        assert len(eid) <= 64 and ENTITY_ID.match(eid), eid


def test_long_names_are_cut_with_a_hash_so_they_stay_distinct() -> None:
    a = default_entity_id("binary_sensor", "x" * 80 + "a", "likelihood")
    b = default_entity_id("binary_sensor", "x" * 80 + "b", "likelihood")
    assert a != b and len(a) == len(b) <= 64


def configs(d: Discovery, stream: str) -> dict[str, dict[str, object]]:
    return {t: json.loads(p) for t, p in d.stream_configs(stream, f"edge-lstm/ha/{stream}")}


def test_stream_configs_follow_the_discovery_schema() -> None:
    d = Discovery("homeassistant", "edge_lstm", "edge-lstm/status", "fitted-forecaster", model_version="3")
    out = configs(d, "pump/7 #a")
    uniques = set()
    kinds = []
    for topic, doc in out.items():
        m = TOPIC.match(topic)
        assert m and m["node"] == "edge_lstm", topic
        assert SENSOR_KEYS <= doc.keys(), doc.keys()
        assert "object_id" not in doc  # deprecated in HA 2025.10, ignored from 2026.4
        assert ENTITY_ID.match(str(doc["default_entity_id"])) and str(doc["default_entity_id"]).startswith(
            m["component"] + ".pump_7_a_"
        )
        assert doc["availability_topic"] == "edge-lstm/status"
        assert (doc["payload_available"], doc["payload_not_available"]) == ("online", "offline")
        dev = doc["device"]
        assert (
            isinstance(dev, dict)
            and dev["name"] == "pump/7 #a"
            and dev["identifiers"] == ["edge_lstm_pump_2f-7_20-_23-a"]
        )
        assert dev["via_device"] == "edge_lstm" and dev["sw_version"] == "3"
        assert ID.match(str(doc["unique_id"])) and doc["unique_id"] not in uniques
        uniques.add(doc["unique_id"])
        assert doc["state_topic"] == "edge-lstm/ha/pump/7 #a"
        assert "expire_after" not in doc
        kinds.append((m["component"], doc["name"]))
        if m["component"] == "sensor":
            assert doc["state_class"] == "measurement" and isinstance(doc["suggested_display_precision"], int)
        else:
            assert doc["device_class"] == "problem" and (doc["payload_on"], doc["payload_off"]) == ("ON", "OFF")
    assert kinds == [("binary_sensor", "Alarm"), ("sensor", "Score"), ("sensor", "Likelihood"), ("sensor", "Deviation")]


def test_unique_ids_do_not_depend_on_the_host_name() -> None:
    a = Discovery("homeassistant", "edge_lstm", "s", "m", legacy_node=object_id("edge-lstm-pi"))
    b = Discovery("homeassistant", "edge_lstm", "s", "m", legacy_node=object_id("edge-lstm-renamed"))
    assert a.stream_configs("pump-1", "t") == b.stream_configs("pump-1", "t")


def test_expire_after_is_sent_when_set() -> None:
    d = Discovery("homeassistant", "edge_lstm", "s", "m", expire_after_s=60)
    assert all(doc["expire_after"] == 60 for doc in configs(d, "p").values())


def test_removal_empties_every_config_topic() -> None:
    d = Discovery("homeassistant", "edge_lstm", "s", "m")
    assert d.stream_removal("pump-1") == [(t, b"") for t, _ in d.stream_configs("pump-1", "x")]


def test_legacy_topics_are_those_earlier_versions_announced() -> None:
    d = Discovery("homeassistant", "edge_lstm", "s", "m", legacy_node=object_id("edge-lstm-pi"))
    assert d.legacy_removal("pump-1") == [
        ("homeassistant/binary_sensor/edge_2d-lstm_2d-pi/pump_2d-1_alarm/config", b""),
        ("homeassistant/sensor/edge_2d-lstm_2d-pi/pump_2d-1_score/config", b""),
        ("homeassistant/sensor/edge_2d-lstm_2d-pi/pump_2d-1_likelihood/config", b""),
    ]
    # A client id equal to the node: the old topics are the new ones, never cleared.
    assert Discovery("homeassistant", "edge_lstm", "s", "m", legacy_node="edge_lstm").legacy_removal("p") == []


def test_daemon_device_reads_the_stats_topic() -> None:
    d = Discovery("homeassistant", "edge_lstm", "edge-lstm/status", "m")
    out = {t: json.loads(p) for t, p in d.daemon_configs("edge-lstm/stats")}
    ids = sorted(str(doc["default_entity_id"]) for doc in out.values())
    assert ids == [
        "binary_sensor.edge_lstm_durable",
        "sensor.edge_lstm_backlog",
        "sensor.edge_lstm_last_error",
        "sensor.edge_lstm_live_streams",
        "sensor.edge_lstm_model",
        "sensor.edge_lstm_readings_per_second",
        "sensor.edge_lstm_spilled_streams",
        "sensor.edge_lstm_uptime",
    ]
    for topic, doc in out.items():
        assert TOPIC.match(topic) and doc["state_topic"] == "edge-lstm/stats"
        assert doc["device"]["identifiers"] == ["edge_lstm"] and doc["device"]["name"] == "edge-lstm"
    assert d.daemon_configs("") == []  # no stats topic: nothing to read
    other = Discovery("homeassistant", "hall2", "s", "m")
    assert (
        json.loads(other.daemon_configs("x")[0][1])["default_entity_id"] == "sensor.edge_lstm_hall2_readings_per_second"
    )


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"node_id": "hall 2"}, "homeassistant.node_id"),
        ({"state_pattern": "ha/+"}, "homeassistant.state_pattern"),
        ({"state_pattern": "ha/fixed"}, "homeassistant.state_pattern"),
        ({"state_interval_s": -1}, "homeassistant.state_interval_s"),
        ({"expire_after_s": 10}, "expire_after_s (10) must exceed state_interval_s (10.0)"),
    ],
)
def test_bad_home_assistant_settings_are_refused_by_name(section: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(None, homeassistant=section)
    assert needle in str(e.value)
    load_settings(None, homeassistant={"expire_after_s": 30, "state_interval_s": 10})  # consistent: fine
