"""Building blocks for the fault tests (tests/test_faults.py): a persistent mosquitto that survives
restarts, MQTT clients with their own persistent sessions that ride out broker restarts, and the daemon
as a restartable subprocess (`python -m edge_lstm run`, configured by EDGE_LSTM_* variables) that can be
killed with SIGKILL at any moment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from conftest import json_lines

from edge_lstm import Engine, Reading, Result
from edge_lstm.durable import checkpoint
from edge_lstm.durable.journal import Journal
from edge_lstm.durable.store import load_into

# ---- broker ------------------------------------------------------------------------------------


def persistent_broker() -> Any:
    """A started PrivateBroker with `persistence true` whose database really is written.

    Started as root, mosquitto drops privileges to the `mosquitto` user, which cannot write into a
    private (0700, root-owned) temp dir: persistence then silently does nothing and every restart
    forgets all sessions and queued messages. The work dir is made world-writable instead of adding
    `user root` (which mosquitto refuses if the config already has a `user` line).
    """
    from edge_lstm.demo.broker import PrivateBroker

    workdir = Path(tempfile.mkdtemp(prefix="edge-lstm-faults-mosq-"))
    os.chmod(workdir, 0o777)
    b = PrivateBroker(persistence=True, workdir=workdir)
    b.start()
    return b


def discard_broker(b: Any) -> None:
    b.stop()
    shutil.rmtree(b.dir, ignore_errors=True)


def broker_db_written(b: Any) -> bool:
    return (b.dir / "mosquitto.db").exists()


# ---- an MQTT client with a persistent session --------------------------------------------------


def persistent_client(client_id: str, max_inflight: int) -> Any:
    """A paho v5 client for a persistent session that never holds publishes in paho's own queue."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(max_inflight)
    c.max_queued_messages_set(0)
    return c


def connect_persistent(c: Any, port: int, expiry_s: int) -> None:
    """Connect resuming the session (clean_start=False) and ask the broker to keep it `expiry_s`."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    c.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)


class SessionClient:
    """A paho MQTT v5 client with a stable id, clean_start=False and a session expiry, so that the broker
    keeps its subscriptions and queued QoS 1 messages across broker restarts and reconnects; paho
    reconnects on its own (fast) and resends its unacknowledged publishes.

    `subscriptions` are made on the first connect only: later connects must find the session present
    (`sessions_lost` counts those that did not, i.e. a broker that forgot its state).
    """

    def __init__(
        self,
        port: int,
        client_id: str,
        subscriptions: tuple[str, ...] = (),
        *,
        expiry_s: int = 3600,
        max_inflight: int = 1000,
    ) -> None:
        self.port = port
        self.subscriptions = subscriptions
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.connects = 0
        self.sessions_lost = 0
        self.subscribed = threading.Event()
        self._sub_mids: set[int] = set()
        self.infos: list[Any] = []
        c = persistent_client(client_id, max_inflight)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        connect_persistent(c, port, expiry_s)
        c.loop_start()
        if subscriptions and not self.subscribed.wait(10):
            raise AssertionError(f"{client_id} did not subscribe to {subscriptions}")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        with self.lock:
            self.connects += 1
            present = bool(getattr(flags, "session_present", False))
            first = self.connects == 1
            if not first and not present:
                self.sessions_lost += 1
        if self.subscriptions and (first or not present):
            for t in self.subscriptions:
                _, mid = c.subscribe(t, qos=1)
                self._sub_mids.add(mid)

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, p: Any) -> None:
        self._sub_mids.discard(mid)
        if not self._sub_mids:
            self.subscribed.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=qos))

    def all_published(self) -> bool:
        from edge_lstm.service.mqtt import is_handed_over

        return all(is_handed_over(i) for i in self.infos)

    def wait_published(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.all_published():
            if time.monotonic() > deadline:
                n = sum(1 for i in self.infos if not i._published)  # noqa: SLF001
                raise AssertionError(f"{n} publishes not acknowledged by the broker within {timeout} s")
            time.sleep(0.02)

    def snapshot(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class OrderedPublisher:
    """A QoS 1 publisher (persistent session) that keeps its publication order across broker restarts.

    paho resends its unacknowledged publishes after a reconnect from the network thread, and a
    `publish()` from another thread in the window between the new socket and the CONNACK goes out
    *before* those resends: the broker then has a stream's newer readings ahead of older ones, and the
    daemon rightly rejects the older ones as `out_of_order` (measured: 6 of 3000 readings in one run).
    That is a property of the sensor's client, not of the daemon, so this publisher runs paho's loop and
    its publishing in one thread: after a reconnect paho's resends (in order) happen before anything new.
    """

    def __init__(self, port: int, client_id: str, *, expiry_s: int = 3600) -> None:
        self.port = port
        self.connected = False
        self.connects = 0
        self.sessions_lost = 0
        self.reconnect_attempts = 0
        self.infos: list[Any] = []
        c = persistent_client(client_id, 10_000)  # never "queued" in paho: every publish goes out in order
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c
        connect_persistent(c, port, expiry_s)
        self._ensure_connected(time.monotonic() + 10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        if self.connects > 1 and not getattr(flags, "session_present", False):
            self.sessions_lost += 1
        self.connected = True

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected = False

    def _ensure_connected(self, deadline: float) -> None:
        while not self.connected:
            if time.monotonic() > deadline:
                raise AssertionError("publisher could not (re)connect")
            rc = self.client.loop(timeout=0.02)
            if rc != 0 and not self.connected:
                try:
                    self.reconnect_attempts += 1
                    self.client.reconnect()
                except OSError:
                    time.sleep(0.1)

    def pump(self, seconds: float) -> None:
        """Run the network loop (and reconnect) for about `seconds`."""
        end = time.monotonic() + seconds
        while True:
            self._ensure_connected(time.monotonic() + 60)
            left = end - time.monotonic()
            if left <= 0:
                return
            self.client.loop(timeout=min(left, 0.01))

    def publish(self, topic: str, payload: bytes) -> None:
        self._ensure_connected(time.monotonic() + 60)
        self.infos.append(self.client.publish(topic, payload, qos=1))

    def run(self, messages: list[tuple[str, bytes]], rate: float) -> None:
        """Publish `messages` in order at `rate` per second (catching up after an outage)."""
        t0 = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                self.pump(wait)
            self.publish(topic, payload)

    def wait_published(self, timeout: float) -> None:
        from edge_lstm.service.mqtt import is_handed_over

        deadline = time.monotonic() + timeout
        while not all(is_handed_over(i) for i in self.infos):
            if time.monotonic() > deadline:
                n = sum(1 for i in self.infos if not is_handed_over(i))
                raise AssertionError(f"{n} publishes not acknowledged by the broker within {timeout} s")
            self.pump(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(timeout=0.1)


def retained(port: int, topic: str, timeout: float = 3.0) -> bytes | None:
    """The retained message on `topic` as a fresh (clean session) subscriber sees it; None if none."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)

    def on_subscribe(cl: Any, u: Any, mid: int, rcs: Any, p: Any) -> None:
        # Retained messages are sent right after SUBACK: give them a moment, then give up.
        threading.Timer(0.3, done.set).start()

    def on_message(cl: Any, u: Any, msg: Any) -> None:
        if msg.retain:
            got.append(msg.payload)
            done.set()

    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        done.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- the daemon as a restartable subprocess -------------------------------------------------------


class DaemonRunner:
    """`python -m edge_lstm run` configured only by EDGE_LSTM_* environment variables; JSON log lines
    of each start go to `workdir/daemon-<n>.log`. `start()` again after `kill9()` = the same daemon
    (same client id, same state dir) coming back after a crash."""

    def __init__(self, workdir: Path, settings: dict[str, Any]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_")}
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"):
            env.pop(k, None)
        defaults = {
            "log.format": "json",
            "log.level": "info",
            "log.stats_interval_s": 1.0,
            "mqtt.host": "127.0.0.1",
            "mqtt.reconnect_min_delay_s": 1,
            "mqtt.reconnect_max_delay_s": 2,
        }
        for key, value in {**defaults, **settings}.items():
            env["EDGE_LSTM_" + key.upper().replace(".", "__")] = str(value)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills = 0

    def start(self) -> DaemonRunner:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.workdir / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_lstm", "run"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=f,
                cwd=self.workdir,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Where is it stuck? py-spy is not a dependency: ask faulthandler (SIGUSR1 is not wired),
            # so show the log, which says how far the shutdown got.
            raise AssertionError(
                f"daemon did not exit {timeout} s after SIGTERM; log:\n{self.text()[-4000:]}"
            ) from None

    def stop(self) -> None:
        """Teardown: kill whatever is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def text(self, run: int = -1) -> str:
        return self.logs[run].read_text(errors="replace") if self.logs else ""

    def events(self, run: int | None = -1) -> list[dict[str, Any]]:
        """Parsed log lines of one start (default: the latest), or of all starts (run=None)."""
        files = self.logs if run is None else [self.logs[run]]
        return [doc for p in files for doc in json_lines(p.read_text(errors="replace"))]

    def wait_event(
        self, name: str, timeout: float = 30.0, count: int = 1, where: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.get("event") == name and where(e)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {name!r}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name!r} event within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.02)


# ---- traffic, reference and final state ----------------------------------------------------------


def make_traffic(n_streams: int, n_steps: int, t0: float, seed: int) -> list[Reading]:
    """Readings in publication order: step by step, every stream once per step, explicit event times."""
    rng = np.random.default_rng(seed)
    return [
        Reading(f"s{k:03d}", t0 + t, tuple(rng.normal(size=3).round(5).tolist()))
        for t in range(n_steps)
        for k in range(n_streams)
    ]


def reference_run(model: Any, readings: list[Reading], batch: int) -> tuple[Engine, dict[tuple[str, float], Result]]:
    """The uninterrupted run: an in-process engine over the same readings in order."""
    engine = Engine(model)
    results: dict[tuple[str, float], Result] = {}
    for i in range(0, len(readings), batch):
        for out in engine.process(readings[i : i + batch]):
            assert isinstance(out, Result), out
            results[(out.stream, out.ts)] = out
    return engine, results


def restored_engine(model: Any, state_dir: Path) -> tuple[Engine, checkpoint.Checkpoint, int]:
    """What a restart would load from `state_dir`, loaded by the production code (durable.store.load_into),
    read-only. Returns (engine, checkpoint, journal records replayed)."""
    ck = checkpoint.load(state_dir / "checkpoint", model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None, f"no checkpoint in {state_dir}"
    engine = Engine(model)
    loaded = load_into(engine, ck, Journal(state_dir))
    return engine, ck, loaded.replayed


def state_difference(a: Engine, b: Engine, stream: str) -> float:
    ra, rb = a.table.row(stream), b.table.row(stream)
    return max(
        float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
        for x, y in zip([*ra.states, ra.prediction], [*rb.states, rb.prediction])
    )


def results_by_key(payloads: list[bytes]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in payloads:
        doc = json.loads(p)
        out[(doc["stream"], float(doc["ts"]))].append(doc)
    return out
