"""Home Assistant at the MQTT level (issue 21): the real daemon, a private mosquitto and two clients:

- `order`: subscribed to `#`, it records everything in the order the broker delivered it;
- `ha`: behaves as Home Assistant's MQTT integration does: it reads `homeassistant/+/+/+/config`, and
  subscribes to an entity's state topic only once it has processed that entity's config; it renders
  each state with the entity's `value_template` (Jinja, as HA does: `None` is "unknown") and keeps
  every entity's state history; an empty config removes the entity.

New streams `pump-1`, `Halle 2.Pumpe ü` and `motor_7.B`; each of the issue's eight points is checked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Publisher, mqtt_client
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
STREAMS = ("pump-1", "Halle 2.Pumpe ü", "motor_7.B")
SLUGS = {"pump-1": "pump_1", "Halle 2.Pumpe ü": "halle_2_pumpe_u", "motor_7.B": "motor_7_b"}
CONFIG = re.compile(r"^homeassistant/(sensor|binary_sensor)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")
INTERVAL_S = 1.0
KEYS = (("alarm", "binary_sensor"), ("score", "sensor"), ("likelihood", "sensor"), ("deviation", "sensor"))


class HomeAssistantLike:
    """Home Assistant's MQTT discovery, as far as the order of subscriptions and states goes."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.configs: dict[str, dict[str, Any]] = {}  # config topic -> config (removed: popped)
        self.removed: list[str] = []
        self.history: dict[str, list[str]] = {}  # unique id -> rendered states, in order
        self.subscribed: set[str] = set()
        self.jinja = jinja2.Environment()
        self.client = mqtt_client(port, on_connect=self._on_connect, on_message=self._on_message)
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe("homeassistant/+/+/+/config", qos=1)

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            if CONFIG.match(msg.topic):
                self._config(c, msg.topic, msg.payload)
            else:
                self._state(msg.topic, msg.payload)

    def _config(self, c: Any, topic: str, payload: bytes) -> None:
        if not payload:
            if self.configs.pop(topic, None) is not None:
                self.removed.append(topic)
            return
        doc = json.loads(payload)
        self.configs[topic] = doc
        if doc["state_topic"] not in self.subscribed:  # only now: a state published before is lost
            self.subscribed.add(doc["state_topic"])
            c.subscribe(doc["state_topic"], qos=1)

    def _state(self, topic: str, payload: bytes) -> None:
        for doc in self.configs.values():
            if doc["state_topic"] == topic and payload:
                value = self.jinja.from_string(doc["value_template"]).render(value_json=json.loads(payload))
                self.history.setdefault(doc["unique_id"], []).append(value)

    def entity(self, default_entity_id: str) -> dict[str, Any] | None:
        with self.lock:
            return next((d for d in self.configs.values() if d["default_entity_id"] == default_entity_id), None)

    def states(self, default_entity_id: str) -> list[str]:
        doc = self.entity(default_entity_id)
        with self.lock:
            return list(self.history.get(doc["unique_id"], [])) if doc else []

    def wait(self, pred: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class BrokerOrder:
    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt_client(port, on_connect=lambda c, *a: c.subscribe("#", qos=1), on_message=self._on)
        self.client.loop_start()

    def _on(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def changes(states: list[str]) -> list[str]:
    """The states as Home Assistant records them: a repeated state is no change."""
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def fresh_retained(port: int, topic_filter: str, settle_s: float = 1.0) -> dict[str, bytes]:
    """What a client subscribing now gets as retained messages."""
    got: dict[str, bytes] = {}
    c = mqtt_client(port, on_connect=lambda c, *a: c.subscribe(topic_filter, qos=1))
    c.on_message = lambda cl, u, m: got.__setitem__(m.topic, m.payload) if m.retain else None
    c.loop_start()
    time.sleep(settle_s)
    c.loop_stop()
    c.disconnect()
    return got


@pytest.fixture
def clients(broker: PrivateBroker) -> Iterator[tuple[BrokerOrder, HomeAssistantLike]]:
    order, ha = BrokerOrder(broker.port), HomeAssistantLike(broker.port)
    time.sleep(0.3)  # both subscribed before the daemon starts
    yield order, ha
    order.close()
    ha.close()


def test_home_assistant_sees_what_its_users_expect(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    publisher: Callable[[int], Publisher],
    clients: tuple[BrokerOrder, HomeAssistantLike],
) -> None:
    order, ha = clients
    cfg = daemon_config(
        broker,
        step_model_path,
        tmp_path / "state",
        homeassistant={"enabled": True, "state_interval_s": INTERVAL_S},
        commands={"enabled": True},
        scoring={"baseline": 40},
        alarm={"raise_n": 3, "raise_window": 5, "clear_after": 10},
    )
    d = run_daemon(cfg)
    d.wait_ready()
    pub = publisher(broker.port)
    rng = np.random.default_rng(0)

    def send(stream: str, t: float, fault: bool = False) -> None:
        a, b, c = rng.normal(0, 0.1, 3)
        pub.send(f"sensors/{stream}", reading_payload(T0 + t, [1 + a, 2 + b + (5.0 if fault else 0.0), 3 + c]))

    # Warm-up: a few readings per stream.
    for t in range(5):
        for s in STREAMS:
            send(s, t)
    pub.flush()
    for s in STREAMS:
        ha.wait(lambda s=s: ha.states(f"sensor.{SLUGS[s]}_score"), f"a first state for {s}")

    # 1. Configs before the first state on the broker, and the state retained.
    seen = order.snapshot()
    for s in STREAMS:
        state_topic = ha.entity(f"sensor.{SLUGS[s]}_score")["state_topic"]  # type: ignore[index]
        first_state = next(i for i, (t, _, _) in enumerate(seen) if t == state_topic)
        configs = [i for i, (t, p, _) in enumerate(seen) if t.startswith("homeassistant/") and p and s in p.decode()]
        assert len(configs) == 4 and max(configs) < first_state, (s, configs, first_state)
        assert seen[first_state][2] or fresh_retained(broker.port, state_topic)  # retained on the broker

    # 2. Alarm OFF right after discovery (retained); 3. readable default_entity_id, no object_id;
    # 4. precision and state class; 5. unknown while warming up.
    for s in STREAMS:
        slug = SLUGS[s]
        assert ha.states(f"binary_sensor.{slug}_alarm")[0] == "OFF"
        assert ha.states(f"sensor.{slug}_score")[0] == "None"  # HA: unknown, not 0.0
        for key, domain in KEYS:
            doc = ha.entity(f"{domain}.{slug}_{key}")
            assert doc is not None and "object_id" not in doc and len(doc["default_entity_id"]) <= 64
            assert doc["device"]["name"] == s
            if domain == "sensor":
                assert doc["state_class"] == "measurement" and doc["suggested_display_precision"] in (2, 3)
    alarm_topic = ha.entity("binary_sensor.pump_1_alarm")["state_topic"]  # type: ignore[index]
    assert json.loads(fresh_retained(broker.port, alarm_topic)[alarm_topic])["alarm"] == "OFF"

    # Alarm: pump-1 learns its baseline, a sustained fault raises the alarm, the quiet clears it.
    t = 5
    for phase, n in ((False, 60), (True, 40), (False, 60)):
        for _ in range(n):
            send("pump-1", t, fault=phase)
            t += 1
    pub.flush()
    ha.wait(lambda: changes(ha.states("binary_sensor.pump_1_alarm"))[-2:] == ["ON", "OFF"], "alarm raised, cleared")
    assert changes(ha.states("binary_sensor.pump_1_alarm")) == ["OFF", "ON", "OFF"]  # as HA records them
    ha.wait(lambda: ha.states("sensor.pump_1_score")[-1] != "None", "a scored state")  # the held-back latest
    assert float(ha.states("sensor.pump_1_score")[-1]) >= 0.0  # a number once scored

    # 6. A 10 Hz stream: at most one HA state per interval, every reading on the result topic.
    before = len(ha.states("sensor.motor_7_b_score"))
    start = time.monotonic()
    for i in range(30):
        send("motor_7.B", 5 + i * 0.1)
        pub.flush()
        time.sleep(max(0.0, start + (i + 1) * 0.1 - time.monotonic()))
    elapsed = time.monotonic() - start
    time.sleep(INTERVAL_S + 0.5)  # the last held-back state follows within an interval
    n_states = len(ha.states("sensor.motor_7_b_score")) - before
    results = [m for m in order.snapshot() if m[0] == "edge-lstm/scores/motor_7.B"]
    assert len(results) == 5 + 30
    assert 1 <= n_states <= elapsed / INTERVAL_S + 2, (n_states, elapsed)

    # 7. The daemon's device, with live states from the stats topic.
    ha.wait(lambda: ha.states("sensor.edge_lstm_live_streams")[-1:] == ["3"], "live streams = 3")
    for eid in ("sensor.edge_lstm_readings_per_second", "sensor.edge_lstm_backlog", "sensor.edge_lstm_uptime",
                "sensor.edge_lstm_spilled_streams"):  # fmt: skip
        assert float(ha.states(eid)[-1]) >= 0.0, eid
    assert ha.states("binary_sensor.edge_lstm_durable")[-1] == "ON"  # checkpoints on (the default)
    assert ha.states("sensor.edge_lstm_model")[-1].startswith("test-model ")
    assert ha.states("sensor.edge_lstm_last_error")[-1]
    assert ha.entity("sensor.halle_2_pumpe_u_score")["device"]["via_device"] == "edge_lstm"  # type: ignore[index]

    # 8. A removed stream: its configs are cleared (HA deletes the device), nothing of it is retained.
    halle = [t for t, doc in ha.configs.items() if doc["device"]["name"] == "Halle 2.Pumpe ü"]
    state_topic = ha.entity("sensor.halle_2_pumpe_u_score")["state_topic"]  # type: ignore[index]
    pub.send("edge-lstm/command", {"op": "remove", "stream": "Halle 2.Pumpe ü"})
    pub.flush()
    ha.wait(lambda: set(halle) <= set(ha.removed), "the removed stream's entities deleted")
    left = fresh_retained(broker.port, "homeassistant/#")
    assert not set(halle) & set(left) and len([t for t in left if "/daemon_" in t]) == 8
    assert state_topic not in fresh_retained(broker.port, "edge-lstm/ha/#")
    assert ha.entity("sensor.pump_1_score") is not None  # the others stay


def test_a_broker_restarted_without_persistence_gets_the_configs_again(
    step_model_path: Path, tmp_path: Path, run_daemon: Callable[..., DaemonProcess]
) -> None:
    """Such a broker forgets every retained message: the daemon reconnects without its session and
    announces the daemon and every live stream again; the next state goes at once."""

    with PrivateBroker(persistence=False) as broker:
        ha = {"enabled": True, "state_interval_s": 60}
        cfg = daemon_config(broker, step_model_path, tmp_path / "state", homeassistant=ha)
        d = run_daemon(cfg)
        d.wait_ready()
        pub = mqtt_client(broker.port)
        pub.loop_start()
        pub.publish("sensors/pump-1", reading_payload(T0, [1.0, 2.0, 3.0]), qos=1).wait_for_publish(10)

        def retained_now() -> dict[str, bytes]:
            return {**fresh_retained(broker.port, "homeassistant/#"), **fresh_retained(broker.port, "edge-lstm/ha/#")}

        def announced(r: dict[str, bytes]) -> bool:
            return len([t for t in r if "pump_2d-1_" in t]) == 4 and len([t for t in r if "/daemon_" in t]) == 8

        deadline = time.monotonic() + 20
        while not (announced(before := retained_now()) and "edge-lstm/ha/pump-1" in before):
            assert time.monotonic() < deadline, sorted(before)
        pub.loop_stop()
        broker.restart()
        assert not fresh_retained(broker.port, "homeassistant/#", settle_s=0.3)  # the broker forgot them
        deadline = time.monotonic() + 20
        while not announced(after := fresh_retained(broker.port, "homeassistant/#")):
            assert time.monotonic() < deadline, sorted(after)
        pub = mqtt_client(broker.port)
        pub.loop_start()
        pub.publish("sensors/pump-1", reading_payload(T0 + 1, [1.0, 2.0, 3.0]), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 15  # well within state_interval_s (60 s): the state went at once
        while "edge-lstm/ha/pump-1" not in fresh_retained(broker.port, "edge-lstm/ha/#", settle_s=0.3):
            assert time.monotonic() < deadline
        pub.loop_stop()
        pub.disconnect()
