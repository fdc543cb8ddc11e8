"""bench/bench_mqtt.py's consumers: the paho relay process, and `edge-lstm run` as a subprocess (DaemonRun)
with its config and settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from mqtt_session import FEATURES, SUB, client, connect_props

# ---- the relay process -------------------------------------------------------------------------------


def relay_main(port: int, client_id: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    c = client(client_id, manual_ack=True)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    pending: dict[int, int] = {}

    def on_message(cl: paho.Client, ud: Any, msg: paho.MQTTMessage) -> None:
        d = json.loads(msg.payload)
        stream = msg.topic.rsplit("/", 1)[1]
        values = [float(d[f]) for f in FEATURES]
        out = json.dumps({"stream": stream, "ts": float(d["ts"]), "score": 0.0, "prediction": values}).encode()
        info = cl.publish(f"edge-lstm/scores/{stream}", out, qos=1)
        pending[info.mid] = msg.mid

    def on_publish(cl: paho.Client, ud: Any, mid: int, rc: Any, props: Any) -> None:
        inp = pending.pop(mid, None)
        if inp is not None:
            cl.ack(inp, 1)

    c.on_message = on_message
    c.on_publish = on_publish
    c.on_connect = lambda cl, *_: cl.subscribe(SUB, qos=1)
    c.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    c.loop_forever()


# ---- the daemon process ------------------------------------------------------------------------------


class DaemonRun:
    def __init__(self, name: str, src: Path, port: int, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.src, self.env = name, src, env or {}
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.client_id = f"bench-{name}-{os.getpid()}"
        (self.dir / "config.toml").write_text(
            f'state_dir = "{self.dir / "state"}"\n\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
            f'client_id = "{self.client_id}"\n\n[log]\nformat = "json"\nlevel = "info"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, notify: str | None = None) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(self.src), **self.env)
        env.pop("NOTIFY_SOCKET", None)
        if notify:
            env["NOTIFY_SOCKET"] = notify
        self.starts += 1
        err = open(self.dir / f"daemon.{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_lstm", "run", "--config", str(self.dir / "config.toml")],
            cwd=self.dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def settings_env(spec: str) -> dict[str, str]:
    """ "engine.max_wait_ms=5,engine.target_batch=1" -> the daemon's environment variables."""
    env = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not (section and name and value):
            raise SystemExit(f"--variant: expected SECTION.KEY=VALUE, got {item!r}")
        env[f"EDGE_LSTM_{section.upper()}__{name.upper()}"] = value.strip()
    return env
