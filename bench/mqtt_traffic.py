"""bench/bench_mqtt.py's load and its observer: the private broker with the collector process, and the
publishers (mqtt_load's raw-socket ones by default, paho's with `--paho-load`)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mqtt_load  # noqa: E402
from mqtt_session import client, reading  # noqa: E402
from proc_cpu import cpu_s  # noqa: E402

from edge_lstm.demo.broker import PrivateBroker  # noqa: E402


def _values_json(i: int) -> bytes:
    """The part of `reading`'s JSON after its ts (it depends on i % 17 only)."""
    return b"," + reading("", 0.0, i).split(b",", 1)[1]


VALUES = [_values_json(i) for i in range(17)]


# The load generator: mqtt_load's raw-socket publisher and collector (default), or paho's (--paho-load,
# what rounds 1-3 used; set by bench_mqtt.py's and latency_probe.py's main, read at call time by
# Collector (passed to the collector process) and paced).
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
