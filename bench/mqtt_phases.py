"""bench/bench_mqtt.py's phases: backlog drain, steady load, latency, idle / READY, per consumer."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import time
from typing import Any

from mqtt_consumers import DaemonRun, relay_main
from mqtt_session import drop_session, make_session
from mqtt_traffic import Collector, paced, queue_backlog
from proc_cpu import cpu_s, machine_busy_s


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
