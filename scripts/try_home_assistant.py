"""Manual check against a real Home Assistant (not a test: HA does not install offline in CI).

    python3.11 -m venv /tmp/havenv
    /tmp/havenv/bin/pip install homeassistant==2024.1.0 paho-mqtt==1.6.1 janus==1.0.0 \\
        aiohttp_cors==0.7.0 aiohttp-fast-url-dispatcher==0.3.0 aiohttp-zlib-ng==0.1.3
    .venv/bin/python scripts/try_home_assistant.py --hass /tmp/havenv/bin/hass

(Those extra pins are the `mqtt`, `file_upload` and `http` integrations' requirements, which `hass
--skip-pip` does not install; later HA versions need a newer Python and other pins.)

Starts a private mosquitto, a Home Assistant with the MQTT integration (a config entry written into
`.storage`) and `mqtt_statestream`, which publishes every entity's state as HA shows it on
`hastate/<domain>/<object_id>/state`; then the daemon (`edge-lstm run`) with `[homeassistant]` on. It
sends the demo's simulated readings for `pump-1`, `Halle 2.Pumpe ü` and `motor_7.B`, an overheat on
`pump-1`, removes
`Halle 2.Pumpe ü`, stops everything and prints what HA showed and what its registries kept.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.demo.simulate import Machine

STREAMS = ("pump-1", "Halle 2.Pumpe ü", "motor_7.B")
HA_CONFIG = """
homeassistant:
  name: edge-lstm check
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
logger:
  default: warning
mqtt_statestream:
  base_topic: hastate
  include:
    entity_globs: ["sensor.*", "binary_sensor.*"]
"""
DAEMON_CONFIG = """
state_dir = "{root}/state"
[mqtt]
port = {port}
client_id = "edge-lstm-ha-check"
[homeassistant]
enabled = true
state_interval_s = 1
[commands]
enabled = true
[scoring]
baseline = 40
[log]
stats_interval_s = 2
"""


def write_home_assistant(cfg: Path, port: int) -> None:
    (cfg / ".storage").mkdir(parents=True)
    (cfg / "configuration.yaml").write_text(HA_CONFIG)
    entry = {
        "entry_id": "edgelstmcheck",
        "version": 1,
        "domain": "mqtt",
        "title": "mqtt",
        "data": {"broker": "127.0.0.1", "port": port, "discovery": True},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    doc = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}
    (cfg / ".storage" / "core.config_entries").write_text(json.dumps(doc))


class HaStates:
    """Every entity's states as HA published them (mqtt_statestream)."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.states: dict[str, list[str]] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, "edge-lstm-ha-check-watch")
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("hastate/#")
        self.client.loop_start()

    def _on(self, c: Any, u: Any, m: Any) -> None:
        parts = m.topic.split("/")
        if len(parts) == 4 and parts[3] == "state":
            with self.lock:
                self.states.setdefault(f"{parts[1]}.{parts[2]}", []).append(m.payload.decode())

    def show(self, title: str) -> None:
        with self.lock:
            print(f"--- {title}")
            for entity, states in sorted(self.states.items()):
                print(f"  {entity:<42} {' -> '.join(states[-8:])}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hass", required=True, help="the `hass` executable of a Home Assistant install")
    p.add_argument("--start-s", type=float, default=25.0, help="how long Home Assistant takes to start")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edge-lstm-ha-check-"))
    broker = PrivateBroker()
    broker.start()
    ha_cfg = root / "ha"
    write_home_assistant(ha_cfg, broker.port)
    watch = HaStates(broker.port)
    procs = []
    try:
        with open(root / "ha.log", "w") as ha_log:
            procs.append(subprocess.Popen([args.hass, "-c", str(ha_cfg), "--skip-pip"], stdout=ha_log, stderr=ha_log))
        time.sleep(args.start_s)
        (root / "daemon.toml").write_text(DAEMON_CONFIG.format(root=root, port=broker.port))
        with open(root / "daemon.log", "w") as d_log:
            cmd = [sys.executable, "-m", "edge_lstm", "run", "--config", str(root / "daemon.toml")]
            procs.append(subprocess.Popen(cmd, stdout=d_log, stderr=d_log))
        time.sleep(4)
        drive(broker.port, watch)
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        broker.stop()
    registry = json.loads((ha_cfg / ".storage" / "core.entity_registry").read_text())
    devices = json.loads((ha_cfg / ".storage" / "core.device_registry").read_text())
    print("--- entity registry (entity id, unique id)")
    for e in sorted(registry["data"]["entities"], key=lambda e: str(e["entity_id"])):
        print(f"  {e['entity_id']:<42} {e['unique_id']}")
    print("--- devices:", sorted(d["name"] for d in devices["data"]["devices"]))
    print("--- deleted devices:", [d["identifiers"] for d in devices["data"].get("deleted_devices", [])])
    print(f"(logs: {root})")
    return 0


def drive(port: int, watch: HaStates) -> None:
    """The demo's simulated machines (the packaged model knows them): warm-up, then an overheat on
    pump-1 long enough to raise its alarm, and normal operation until it clears."""
    pub = paho.Client(CallbackAPIVersion.VERSION2, "edge-lstm-ha-check-sensors")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    machines = {s: Machine(i) for i, s in enumerate(STREAMS)}
    t0 = time.time() - 1000

    def send(stream: str, t: int) -> None:
        temperature, vibration, current = machines[stream].step()
        doc = {"ts": t0 + t, "temperature": temperature, "vibration": vibration, "current": current}
        pub.publish(f"sensors/{stream}", json.dumps(doc), qos=1)

    for t in range(5):
        for s in STREAMS:
            send(s, t)
    time.sleep(5)
    watch.show("warming up")
    for t in range(5, 400):
        if t == 100:
            machines["pump-1"].inject("overheat", 20)
        send("pump-1", t)
    time.sleep(5)
    watch.show("after an overheat on pump-1")
    pub.publish("edge-lstm/command", json.dumps({"op": "remove", "stream": "Halle 2.Pumpe ü"}), qos=1)
    time.sleep(15)  # HA saves its registries with a delay
    pub.loop_stop()
    pub.disconnect()


if __name__ == "__main__":
    sys.exit(main())
