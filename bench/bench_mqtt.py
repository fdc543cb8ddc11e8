#!/usr/bin/env python3
"""Throughput of `edge-lstm run` through a real broker, against a paho relay with the same guarantee.

    python bench/bench_mqtt.py                 # full sizes (issue 11)
    python bench/bench_mqtt.py --quick         # small sizes (the smoke test)
    python bench/bench_mqtt.py --daemon old=/path/to/other/checkout   # also run another daemon's source
    python bench/bench_mqtt.py --variant w5=engine.max_wait_ms=5,engine.target_batch=1   # this daemon, other settings
    python bench/bench_mqtt.py --steady-only --repeat 3 --daemon old=/path   # steady CPU A/B, runs in turn
    python bench/bench_mqtt.py --paho-load     # the paho publisher and collector of rounds 1-3

One private mosquitto (persistence on, saved every 1800 s as by default, `max_queued_messages` large enough
for the backlog). Every
consumer runs in its own process; a collector process (subscribed to `edge-lstm/scores/#`, QoS 0)
counts results and reads the consumer's CPU time from /proc/<pid>/stat at its first and last result.

Phases:

- **backlog drain**: a persistent session is created for the consumer, `--backlog` QoS 1 readings over
  `--streams` streams are queued while it is offline, then the consumer starts and drains them.
  readings/s = results / (last result - first result) as seen by the collector; CPU per reading = the
  consumer's process CPU time between those two results / results. Consumers:
  - `relay`: paho 2.x, MQTT v5, `manual_ack`, Receive Maximum 1000, `max_inflight_messages_set(0)`:
    decode the JSON, publish a QoS 1 result, ack the input in `on_publish` once the result is PUBACKed.
  - `daemon` (and any `--daemon NAME=PATH`): `python -m edge_lstm run` with a config (packaged model,
    durable state on in a temp state_dir), PYTHONPATH=PATH for another checkout. `--variant
    NAME=SECTION.KEY=VALUE,...` runs this checkout's daemon again with those settings (as environment
    variables, `EDGE_LSTM_SECTION__KEY`).
- **steady** (daemons): `--steady-streams` streams × 1 Hz for `--steady-s` s: the daemon's CPU share.
- **latency** (daemons): publish → result p50 / p99 at half the daemon's measured drain rate, or at
  `--latency-rate` (the same rate for every consumer: comparable across daemons of different speed). The
  reading's `ts` is its publish time; the collector subtracts it from its receive time.
- **idle / READY** (daemons): the daemon restarted with `NOTIFY_SOCKET`: Popen → `READY=1`; then its CPU
  share over `--idle-s` s with no traffic.

The load generator and the collector (bench/mqtt_load.py, since round 4): readings are written by a
plain-socket MQTT 3.1.1 publisher as pre-encoded QoS 1 PUBLISH packets, in bursts every ~1 ms (one
`send` each); a reading's `ts` is the time just before its burst is written, and the publisher reads and
counts the PUBACKs (every reading is still taken by the broker at QoS 1). The collector is a plain-socket
QoS 0 subscriber: each read's results get that read's time, and a result's `ts` is found with a regular
expression. Latency is measured as before: the collector's receive time - the reading's `ts`. The paho
publisher and collector of rounds 1-3 used about two thirds of a core at 11,000 readings/s on this 2-core
machine (more than the daemon they measured) and capped the drain the collector could see at ~5,000/s
when the machine was busy; `--paho-load` brings them back for comparison. Relay and daemons get the same
generator and collector.

`--steady-only` runs the steady phase alone, `--repeat` times for every consumer (the relay too) in
turn, and prints each one's mean CPU share: for A/B comparisons of CPU changes.

Ratios at the end are daemon / relay from this run (the machine is shared: compare within a run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_lstm.demo.broker import PrivateBroker  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import mqtt_load  # noqa: E402

FEATURES = ("temperature", "vibration", "current")  # the packaged model's
SUB = "sensors/+"
RECEIVE_MAXIMUM = 1000  # the daemon's default mqtt.receive_maximum, used for the relay too
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def client(client_id: str = "", **kw: Any) -> paho.Client:
    return paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        **kw,
    )


def connect_props(receive_maximum: int = RECEIVE_MAXIMUM) -> Properties:
    p = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = receive_maximum
    return p


def drop_session(port: int, client_id: str) -> None:
    """End a consumer's persistent session (clean start, expiry 0): otherwise the broker goes on
    queueing every later reading for it, and later consumers would pay for the stopped ones."""
    c = client(client_id)
    done = threading.Event()
    c.on_connect = lambda *_: done.set()
    c.connect("127.0.0.1", port, clean_start=True)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def make_session(port: int, client_id: str) -> None:
    """A persistent session subscribed to sensors/+ at QoS 1, left offline: readings queue for it."""
    c = client(client_id)
    done = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe(SUB, qos=1)
    c.on_subscribe = lambda *_: done.set()
    c.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    c.disconnect()
    c.loop_stop()


def reading(stream: str, ts: float, i: int) -> bytes:
    return json.dumps(
        {"ts": ts, **{f: round(20.0 + (i * 7 + k * 13) % 17 * 0.5, 3) for k, f in enumerate(FEATURES)}}
    ).encode()


def _values_json(i: int) -> bytes:
    """The part of `reading`'s JSON after its ts (it depends on i % 17 only)."""
    return b"," + reading("", 0.0, i).split(b",", 1)[1]


VALUES = [_values_json(i) for i in range(17)]


# The load generator: mqtt_load's raw-socket publisher and collector (default), or paho's (--paho-load,
# what rounds 1-3 used; set in main, passed to the collector process).
PAHO_LOAD = False


class Publisher:
    """paho publisher (--paho-load)."""

    def __init__(self, port: int) -> None:
        self.c = client()
        self.c.max_inflight_messages_set(0)
        self.c.max_queued_messages_set(0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.last: Any = None

    def publish(self, stream: str, payload: bytes) -> None:
        self.last = self.c.publish(f"sensors/{stream}", payload, qos=1)

    def flush(self, timeout: float = 120) -> None:
        if self.last is not None:
            self.last.wait_for_publish(timeout)

    def close(self) -> None:
        self.flush()
        self.c.disconnect()
        self.c.loop_stop()


# ---- the collector process ---------------------------------------------------------------------------


def _serve(conn: Any, st: dict[str, Any], reset: Callable[..., None]) -> None:
    """A collector's command loop: `watch` (reset the counters for the next phase), `report`, stop."""
    while True:
        cmd = conn.recv()
        if cmd[0] == "watch":
            reset(*cmd[1:])
            conn.send("ok")
        elif cmd[0] == "report":
            conn.send(dict(st))
        else:
            break


def collector_main(port: int, conn: Any, paho_load: bool = False) -> None:
    if paho_load:
        return collector_main_paho(port, conn)
    st: dict[str, Any] = {}

    def reset(pid: int, n: int, latency: bool) -> None:
        st.update(pid=pid, n=n, latency=latency, count=0, t0=None, t1=None, c0=None, c1=None, lat=[])

    reset(0, 0, False)
    ts = mqtt_load.result_ts

    def on_batch(now: float, payloads: list[bytes]) -> None:
        # Every result of one read gets that read's time: when the collector saw them.
        count = st["count"]
        if st["t0"] is None and st["pid"]:
            st["t0"], st["c0"] = now, cpu_s(st["pid"])
        st["count"] = count + len(payloads)
        if st["latency"]:
            st["lat"].extend(now - ts(p) for p in payloads)
        if count < st["n"] <= st["count"] and st["pid"]:
            st["t1"], st["c1"] = now, cpu_s(st["pid"])

    sub = mqtt_load.RawSubscriber(port, "edge-lstm/scores/#")
    reader = threading.Thread(target=sub.run, args=(on_batch,), daemon=True)
    reader.start()
    conn.send("ready")
    _serve(conn, st, reset)
    sub.close()
    reader.join(5)


def collector_main_paho(port: int, conn: Any) -> None:
    """The collector with paho and json.loads per result (--paho-load, rounds 1-3)."""
    st: dict[str, Any] = {}

    def reset(pid: int, n: int, latency: bool) -> None:
        st.update(pid=pid, n=n, latency=latency, count=0, t0=None, t1=None, c0=None, c1=None, lat=[])

    reset(0, 0, False)

    def on_message(cl: Any, ud: Any, msg: Any) -> None:
        now = time.time()
        st["count"] += 1
        if st["latency"]:
            st["lat"].append(now - json.loads(msg.payload)["ts"])
        if st["t0"] is None and st["pid"]:
            st["t0"], st["c0"] = now, cpu_s(st["pid"])
        if st["count"] == st["n"] and st["pid"]:
            st["t1"], st["c1"] = now, cpu_s(st["pid"])

    c = client()
    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe("edge-lstm/scores/#", qos=0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    conn.send("ready")
    _serve(conn, st, reset)
    c.disconnect()
    c.loop_stop()


class Collector:
    def __init__(self, port: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=collector_main, args=(port, child, PAHO_LOAD), daemon=True)
        self.proc.start()
        assert self.conn.recv() == "ready"

    def watch(self, pid: int, n: int, latency: bool = False) -> None:
        self.conn.send(("watch", pid, n, latency))
        assert self.conn.recv() == "ok"

    def report(self) -> dict[str, Any]:
        self.conn.send(("report",))
        return self.conn.recv()  # type: ignore[no-any-return]

    def wait(self, n: int, timeout: float, idle: float = 5.0) -> dict[str, Any]:
        deadline, last_count, last_change = time.monotonic() + timeout, -1, time.monotonic()
        while True:
            r = self.report()
            now = time.monotonic()
            if r["count"] != last_count:
                last_count, last_change = r["count"], now
            if r["count"] >= n or now > deadline or (r["count"] and now - last_change > idle):
                return r
            time.sleep(0.05)

    def close(self) -> None:
        self.conn.send(("quit",))
        self.proc.join(5)


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
        err = open(self.dir / f"daemon.{self.starts}.log", "wb")  # noqa: SIM115 - owned by the process
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


# ---- phases ------------------------------------------------------------------------------------------


def queue_backlog(port: int, n: int, n_streams: int, prefix: str) -> None:
    p = mqtt_load.RawPublisher(port)
    t0 = round(time.time()) - n // n_streams - 60
    burst = []
    for i in range(n):
        stream = f"{prefix}{i % n_streams:04d}"
        burst.append((mqtt_load.topic_part(f"sensors/{stream}"), reading(stream, t0 + i // n_streams, i)))
        if len(burst) == 500 or i == n - 1:
            p.publish(burst)
            burst = []
            p.poll()
    p.close()


def drain(col: Collector, pid: int, n: int, timeout: float) -> dict[str, Any]:
    r = col.wait(n, timeout)
    got = r["count"]
    out: dict[str, Any] = {"results": got}
    if r["t1"] is None:  # not all arrived: measure up to now
        r["t1"], r["c1"] = time.time(), cpu_s(pid)
    if r["t0"] is not None and got > 1:
        out["rate"] = (got - 1) / max(r["t1"] - r["t0"], 1e-9)
        out["cpu_us"] = (r["c1"] - r["c0"]) / (got - 1) * 1e6
    return out


def paced(port: int, rate: float, seconds: float, streams: list[str]) -> int:
    """Publish readings at `rate`/s round-robin over `streams` for `seconds`; ts = publish time.

    Every ~1 ms the readings due are written as one burst of pre-encoded QoS 1 packets, stamped with the
    time just before the write (mqtt_load.RawPublisher); `--paho-load`: paho's publish() per reading."""
    if PAHO_LOAD:
        return paced_paho(port, rate, seconds, streams)
    p = mqtt_load.RawPublisher(port)
    topics = [mqtt_load.topic_part(f"sensors/{s}") for s in streams]
    n = len(topics)
    sent, t0 = 0, time.monotonic()
    while (el := time.monotonic() - t0) < seconds:
        due = int(el * rate)
        if due > sent:
            head = b'{"ts": %.6f' % time.time()
            p.publish([(topics[i % n], head + VALUES[(i + 1) % 17]) for i in range(sent, due)])
            sent = due
        p.poll()
        time.sleep(0.001)
    p.close()
    return sent


def paced_paho(port: int, rate: float, seconds: float, streams: list[str]) -> int:
    """`paced` with paho's publish() per reading, a burst every ~2 ms (rounds 1-3)."""
    p = Publisher(port)
    sent, i, t0 = 0, 0, time.monotonic()
    while (el := time.monotonic() - t0) < seconds:
        due = int(el * rate)
        while sent < due:
            s = streams[i % len(streams)]
            i += 1
            p.publish(s, reading(s, round(time.time(), 6), i))
            sent += 1
        time.sleep(0.002)
    p.close()
    return sent


def wait_ready(proc: subprocess.Popen[bytes], sock: socket.socket, timeout: float) -> float | None:
    t0 = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        try:
            if b"READY=1" in sock.recv(4096):
                return time.monotonic() - t0
        except TimeoutError:
            pass
    return None


def steady(port: int, col: Collector, pid: int, a: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """`--steady-streams` streams x 1 Hz: the consumer's CPU share (% of one core)."""
    streams = [f"{prefix}-steady-{i:04d}" for i in range(a.steady_streams)]
    col.watch(0, 0, latency=True)
    c0, t0 = cpu_s(pid), time.monotonic()
    sent = paced(port, float(a.steady_streams), a.steady_s, streams)
    cpu = (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
    r = col.wait(sent, 10, idle=2)
    out = {"steady_cpu": cpu, "steady_results": r["count"], "steady_sent": sent}
    out.update({f"steady_{k}": v for k, v in percentiles(r["lat"]).items()})
    return out


def percentiles(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    if not lat:
        return {}
    return {"p50_ms": statistics.median(lat) * 1000, "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}


def machine_busy_s() -> float:
    """CPU time all cores spent busy so far (/proc/stat: everything but idle and iowait), seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def latency(
    port: int, col: Collector, rate: float, a: argparse.Namespace, prefix: str, pid: int, broker_pid: int
) -> dict[str, Any]:
    """Publish -> result latency at `rate` readings/s over `--streams` streams, and the CPU share (% of
    one core) of each process meanwhile: the consumer, the broker, the publisher (this process), the
    collector, and the rest of the machine (whatever else runs on it)."""
    out: dict[str, Any] = {"lat_rate": rate}
    col.watch(0, 0, latency=True)
    pids = {"consumer": pid, "broker": broker_pid, "publisher": os.getpid(), "collector": col.proc.pid or 0}
    pids = {k: p for k, p in pids.items() if p}
    c0, m0, t0 = {k: cpu_s(p) for k, p in pids.items()}, machine_busy_s(), time.monotonic()
    sent = paced(port, rate, a.latency_s, [f"{prefix}-lat-{i:03d}" for i in range(a.streams)])
    el = time.monotonic() - t0
    shares = {k: (cpu_s(p) - c0[k]) / el * 100 for k, p in pids.items()}
    shares["other"] = max(0.0, (machine_busy_s() - m0) / el * 100 - sum(shares.values()))
    out["lat_cpu"] = shares
    out.update(percentiles(col.wait(sent, 10, idle=2)["lat"]))
    return out


def run_daemon(d: DaemonRun, port: int, col: Collector, a: argparse.Namespace, broker_pid: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    make_session(port, d.client_id)
    queue_backlog(port, a.backlog, a.streams, f"{d.name}-")
    proc = d.start()
    col.watch(proc.pid, a.backlog)
    res.update(drain(col, proc.pid, a.backlog, a.timeout))
    # steady load
    time.sleep(1.0)
    res.update(steady(port, col, proc.pid, a, d.name))
    # latency at half the measured drain rate
    res.update(latency(port, col, a.latency_rate or res.get("rate", 1000.0) / 2, a, d.name, proc.pid, broker_pid))
    d.stop()
    # start → READY, then idle CPU
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        path = str(d.dir / "notify.sock")
        s.bind(path)
        proc = d.start(notify=path)
        res["ready_s"] = wait_ready(proc, s, 30)
        time.sleep(1.0)
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(a.idle_s)
        res["idle_cpu"] = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100
    d.stop()
    drop_session(port, d.client_id)
    return res


def run_relay(port: int, col: Collector, a: argparse.Namespace) -> dict[str, Any]:
    cid = f"bench-relay-{os.getpid()}"
    make_session(port, cid)
    queue_backlog(port, a.backlog, a.streams, "relay-")
    proc = mp.get_context("spawn").Process(target=relay_main, args=(port, cid), daemon=True)
    proc.start()
    assert proc.pid is not None
    col.watch(proc.pid, a.backlog)
    res = drain(col, proc.pid, a.backlog, a.timeout)
    proc.terminate()
    proc.join(10)
    drop_session(port, cid)
    return res


def relay_under_load(
    port: int, col: Collector, rate: float | None, a: argparse.Namespace, tag: str = "relay", broker_pid: int = 0
) -> dict[str, Any]:
    """The relay's steady CPU share and its latency at `rate` (the daemon's half load; None: no latency
    phase): what the same machine, broker, publisher and collector cost without the daemon's work."""
    cid = f"bench-{tag}-load-{os.getpid()}"
    make_session(port, cid)
    proc = mp.get_context("spawn").Process(target=relay_main, args=(port, cid), daemon=True)
    proc.start()
    assert proc.pid is not None
    time.sleep(1.0)
    res = steady(port, col, proc.pid, a, tag)
    if rate is not None:
        res.update(latency(port, col, rate, a, tag, proc.pid, broker_pid))
    proc.terminate()
    proc.join(10)
    drop_session(port, cid)
    return res


def broker_pid(b: PrivateBroker) -> int:
    return b.proc.pid if b.proc is not None else 0


@contextlib.contextmanager
def bench_broker(extra: str) -> Iterator[tuple[Path, PrivateBroker, Collector]]:
    """The run's private broker (persistent), a temp dir for the daemons' state, and the collector."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp,
        PrivateBroker(persistence=True, extra_conf=extra) as b,
    ):
        col = Collector(b.port)
        try:
            yield Path(tmp), b, col
        finally:
            col.close()


def steady_only(a: argparse.Namespace, daemons: list[tuple[str, Path, dict[str, str]]], extra: str) -> int:
    """`--steady-only`: the steady phase alone, `--repeat` times for each consumer in turn (the relay
    first), for A/B comparisons of CPU changes: their CPU share moves by ~0.5 point from run to run on
    this machine, so one run of each is not enough to see a change of that size."""
    runs: dict[str, list[dict[str, Any]]] = {}
    with bench_broker(extra) as (tmp, b, col):
        for rep in range(a.repeat):
            runs.setdefault("relay", []).append(relay_under_load(b.port, col, None, a, f"relay{rep}"))
            for name, src, env in daemons:
                d = DaemonRun(f"{name}{rep}", src, b.port, tmp, env)
                make_session(b.port, d.client_id)
                try:
                    proc = d.start()
                    time.sleep(3.0)  # started and subscribed (READY takes ~0.5 s)
                    runs.setdefault(name, []).append(steady(b.port, col, proc.pid, a, d.name))
                finally:
                    d.stop()
                drop_session(b.port, d.client_id)
    print(
        f"steady only: {a.steady_streams} streams x 1 Hz for {a.steady_s:g} s, {a.repeat} run(s) per consumer in turn"
    )
    relay = statistics.mean(r["steady_cpu"] for r in runs["relay"])
    for name, rs in runs.items():
        cpu = [r["steady_cpu"] for r in rs]
        print(
            f"{name:<10} steady CPU % {statistics.mean(cpu):5.2f} (runs: {', '.join(f'{c:.2f}' for c in cpu)}; "
            f"{statistics.mean(cpu) / relay:.2f}x the relay)  p50/p99 ms: {', '.join(steady_lat(r) for r in rs)}"
        )
    return 0


def steady_lat(r: dict[str, Any]) -> str:
    return f"{fmt(r.get('steady_p50_ms'), '.1f')}/{fmt(r.get('steady_p99_ms'), '.1f')}"


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--backlog", type=int, default=20_000)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--steady-streams", type=int, default=1000)
    ap.add_argument("--steady-s", type=float, default=30.0)
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--repeat", type=int, default=1, help="drain runs per consumer (best rate kept)")
    ap.add_argument("--steady-only", action="store_true", help="only the steady phase, --repeat runs each")
    ap.add_argument(
        "--latency-rate", type=float, default=0.0, help="latency phase at this rate/s (default: half the drain rate)"
    )
    ap.add_argument("--daemon", action="append", default=[], metavar="NAME=PATH", help="another source tree")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=SECTION.KEY=VALUE[,...]",
        help="this checkout's daemon again, with these settings",
    )
    ap.add_argument(
        "--paho-load",
        action="store_true",
        help="paho publisher and collector (rounds 1-3) instead of mqtt_load's raw-socket ones",
    )
    a = ap.parse_args()
    global PAHO_LOAD
    PAHO_LOAD = a.paho_load
    if a.quick:
        a.backlog, a.streams, a.steady_streams = 600, 20, 50
        a.steady_s, a.latency_s, a.idle_s, a.timeout = 2.0, 2.0, 1.0, 60.0
    daemons: list[tuple[str, Path, dict[str, str]]] = [("daemon", ROOT, {})]
    daemons += [(n, Path(p).resolve(), {}) for n, p in (x.split("=", 1) for x in a.daemon)]
    daemons += [(n, ROOT, settings_env(v)) for n, v in (x.split("=", 1) for x in a.variant)]
    # autosave_interval: mosquitto's default (1800 s), as on a production broker. PrivateBroker saves
    # every second for the restart tests; with this benchmark's sessions and retained alarms each save
    # stalled the broker for tens of ms, and that, not the consumer, was the p99 (the relay's too).
    extra = f"max_queued_messages {a.backlog * 2 + 10_000}\nmax_inflight_messages 1000\nautosave_interval 1800\n"
    if a.steady_only:
        return steady_only(a, daemons, extra)
    rows: dict[str, dict[str, Any]] = {}
    with bench_broker(extra) as (tmp, b, col):
        for rep in range(a.repeat):
            r = run_relay(b.port, col, a)
            if r.get("rate", 0) >= rows.get("relay", {}).get("rate", 0):
                rows["relay"] = r
            for name, src, env in daemons:
                d = DaemonRun(f"{name}{rep}", src, b.port, tmp, env)
                try:
                    r = run_daemon(d, b.port, col, a, broker_pid(b))
                finally:
                    d.stop()
                if r.get("rate", 0) >= rows.get(name, {}).get("rate", 0):
                    rows[name] = r
        if "lat_rate" in rows.get("daemon", {}):
            rows["relay"].update(relay_under_load(b.port, col, rows["daemon"]["lat_rate"], a, broker_pid=broker_pid(b)))
    print(
        f"backlog drain: {a.backlog:,} QoS 1 readings over {a.streams} streams; "
        f"steady: {a.steady_streams} streams x 1 Hz for {a.steady_s:g} s (CPU share, p50/p99 latency); "
        "p50/p99 ms @ rate/s: latency at half the daemon's drain rate"
    )
    cols = [("consumer", 10), ("results", 8), ("readings/s", 11), ("CPU µs/reading", 15), ("steady CPU %", 13)]
    cols += [("p50/p99 ms", 11), ("p50 ms", 7), ("p99 ms", 7), ("@ rate/s", 9), ("idle CPU %", 11), ("READY s", 8)]
    head = " ".join(f"{t:<{w}}" if k == 0 else f"{t:>{w}}" for k, (t, w) in enumerate(cols))
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:<10} {r['results']:>8,} {fmt(r.get('rate'), ',.0f'):>11} {fmt(r.get('cpu_us'), '.0f'):>15} "
            f"{fmt(r.get('steady_cpu'), '.1f'):>13} {steady_lat(r):>11} "
            f"{fmt(r.get('p50_ms'), '.1f'):>7} {fmt(r.get('p99_ms'), '.1f'):>7} "
            f"{fmt(r.get('lat_rate'), ',.0f'):>9} {fmt(r.get('idle_cpu'), '.2f'):>11} {fmt(r.get('ready_s'), '.2f'):>8}"
        )
    print("CPU during the latency phase, % of one core (2 cores: 200 %):")
    for name, r in rows.items():
        if "lat_cpu" in r:
            print(f"{name:<10} " + "  ".join(f"{k} {v:5.1f}" for k, v in r["lat_cpu"].items()))
    relay = rows.get("relay", {})
    for name, _, _ in daemons:
        r = rows.get(name, {})
        if relay.get("rate") and r.get("rate"):
            print(
                f"ratio {name} / relay: readings/s {r['rate'] / relay['rate']:.2f}x, "
                f"CPU per reading {r['cpu_us'] / relay['cpu_us']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
