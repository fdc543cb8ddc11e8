"""Shared fixtures: test models, a private mosquitto, the daemon as a subprocess, an MQTT collector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/onnx_models.py importable as `onnx_models`

from onnx_models import make_step_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def step_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-feature (a, b, c) forecast LSTM step model with calibration, warmup_steps=2."""
    return make_step_model(tmp_path_factory.mktemp("models") / "test-model.onnx")


@pytest.fixture
def broker() -> Iterator[Any]:
    """A started private mosquitto on a free port (persistence on, like docs/mosquitto.conf)."""
    from edge_lstm.demo.broker import BrokerUnavailable, PrivateBroker

    try:
        b = PrivateBroker(persistence=True).start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))
    try:
        yield b
    finally:
        b.stop()
        if b._tmp is not None:
            b._tmp.cleanup()


# ---- TOML -------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for nested dicts of scalars (enough for config files in tests)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


def daemon_config(broker: Any, model: Path, state_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config for a daemon talking to `broker`, with a unique client id; `sections` are merged in."""
    cfg: dict[str, Any] = {
        "model": str(model),
        "state_dir": str(state_dir),
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "client_id": f"edge-lstm-test-{os.getpid()}-{time.monotonic_ns() % 10**9}",
            "reconnect_min_delay_s": 0.2,
            "reconnect_max_delay_s": 1.0,
        },
        "log": {"format": "json", "level": "info", "stats_interval_s": 1.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


# ---- the daemon as a subprocess ---------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON-object lines of a log (structlog's JSON renderer), skipping anything else."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def start_in_thread(daemon: Any, timeout: float = 30.0) -> tuple[threading.Event, threading.Thread]:
    """Run a Daemon in a thread, as the demo does; returns (stop event, thread) once it is ready."""
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    assert daemon.ready.wait(timeout), "daemon not ready"
    return stop, thread


class DaemonProcess:
    """`python -m edge_lstm.cli.run --config FILE` with captured, parsed JSON log lines."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        workdir: Path,
        env: dict[str, str] | None = None,
        config_text: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / f"config-{time.monotonic_ns()}.toml"
        self.config_path.write_text(config_text if config_text is not None else to_toml(config or {}))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_")}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("WATCHDOG_USEC", None)
        full_env.update(env or {})
        self.stderr_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_lstm.cli.run", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=full_env,
            cwd=workdir,
        )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.stderr())

    def wait_event(self, name: str, timeout: float = 30.0, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e.get("event") == name]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {name!r}:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} event within {timeout} s:\n{self.stderr()[-3000:]}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_event("mqtt_subscribed", timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """`run_daemon(config_dict, env=None, config_text=None)` → a started DaemonProcess (killed at teardown)."""
    started: list[DaemonProcess] = []

    def start(
        config: dict[str, Any] | None = None, env: dict[str, str] | None = None, config_text: str | None = None
    ) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path, env, config_text)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


# ---- an MQTT client collecting messages --------------------------------------------------------


class Collector:
    """A paho client subscribed to `topics`; collects (topic, payload, retain) thread-safely."""

    def __init__(self, port: int, topics: list[str], client_id: str = "") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._pending_subs = len(topics)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.topics = topics

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            for t in topics:
                c.subscribe(t, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, rcs: Any, p: Any) -> None:
            with self._lock:
                self._pending_subs -= 1
                if self._pending_subs <= 0:
                    self._subscribed.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("collector did not subscribe")

    def snapshot(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def json(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, r in self.snapshot(prefix)]

    def wait_for(self, pred: Callable[[Collector], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or pred}; got {len(self.messages)} messages")

    def wait_count(self, prefix: str, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        self.wait_for(lambda c: len(c.snapshot(prefix)) >= n, timeout, f"{n} messages on {prefix}*")
        return self.json(prefix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(port: int, topics: list[str]) -> Collector:
        c = Collector(port, topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class Publisher:
    """A QoS 1 publisher (MQTT v5) that waits until the broker has every message."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[Any] = []

    def send(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.infos.append(self.client.publish(topic, payload, qos=qos, retain=retain))

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for i in self.infos:
            i.wait_for_publish(max(0.01, deadline - time.monotonic()))
        self.infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher() -> Iterator[Callable[[int], Publisher]]:
    made: list[Publisher] = []

    def make(port: int) -> Publisher:
        p = Publisher(port)
        made.append(p)
        return p

    yield make
    for p in made:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
