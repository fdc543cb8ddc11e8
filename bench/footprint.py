#!/usr/bin/env python3
"""The daemon's footprint on a Pi (issue 22), every figure in one command, daemons compared in one run.

    python bench/footprint.py                              # this checkout's daemon, default settings
    python bench/footprint.py --tree main=/path/to/tree    # and another source tree's, in turn
    python bench/footprint.py --variant w5=engine.max_wait_ms=5,engine.target_batch=8
    python bench/footprint.py --runs 2 --no-drain          # two rounds of every daemon, no drain phase
    python bench/footprint.py --quick                      # small sizes (the smoke test)

One private mosquitto (bench_mqtt's: persistence on, autosave every 1800 s) and the raw-socket publisher
and collector of bench/mqtt_load.py. For every daemon (`daemon` is this checkout; `--tree NAME=PATH`
another source tree; `--variant NAME=SECTION.KEY=VALUE,...` this checkout with other settings), in
turn, `--runs` times:

- **start / idle**: Popen -> `READY=1` over `NOTIFY_SOCKET`, then its CPU share over `--idle-s` s of no
  traffic.
- **light** and **1k x 1 Hz**: publish -> result p50 / p99 / max latency at `--light-rate` readings/s
  over `--light-streams` streams, then at 1,000 readings/s over 1,000 streams (each stream once a
  second), each for `--secs` s; the daemon's CPU share (% of one core) meanwhile; results missing.
- **memory** (unless `--no-memory`): the daemon restarted with `engine.max_streams` = `--mem-streams` and
  commands on; one reading for each of `--warm-streams` streams, RSS ("warm": onnxruntime and the code
  paths touched), then one reading for each of the other new streams (`--mem-rate` a second), RSS when
  every result is in (the table holds them all), then a checkpoint (the `checkpoint` command): its time
  (the daemon's `checkpoint` log line), the peak RSS while it ran (VmHWM, reset just before through
  /proc/<pid>/clear_refs) and RSS after. Per stream = (RSS after the checkpoint - RSS warm) / new streams
  The checkpoint's impact: `--ck-rate` readings/s over `--ck-streams` of the live streams, spread over
  the table, for `--ck-load-s` s, p50 / p99 / max, once without a checkpoint ("quiet") and once with the
  checkpoint asked for `--ck-delay-s` s in; the peak also counts the daemon's children's private memory
  (a forked checkpoint writer's copy-on-write pages), sampled every 20 ms.
- **drain** (unless `--no-drain`): bench_mqtt's backlog drain (`--backlog` readings over 200 streams,
  queued while offline), the paho relay once per run first: readings/s and the ratio to the relay.

Ratios are printed for every daemon against the first (`daemon`) and against the relay, from this run.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import mqtt_load  # noqa: E402
from mqtt_consumers import DaemonRun, settings_env  # noqa: E402
from mqtt_phases import drain, run_relay, wait_ready  # noqa: E402
from mqtt_session import drop_session, make_session  # noqa: E402
from mqtt_traffic import Collector, bench_broker, paced, queue_backlog, reading  # noqa: E402
from proc_cpu import cpu_s  # noqa: E402
from proc_mem import TotalPeak, reset_peak, rss_kb  # noqa: E402

Consumer = tuple[str, Path, dict[str, str]]


def lat_stats(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    if not lat:
        return {}
    return {
        "p50": statistics.median(lat) * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "max": lat[-1] * 1000,
    }


def load(
    port: int,
    col: Collector,
    pid: int,
    rate: float,
    n_streams: int,
    secs: float,
    tag: str,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """`rate` readings/s round-robin over `n_streams` (or `names`) for `secs`: latency, CPU share, results
    missing."""
    col.watch(0, 0, latency=True)
    c0, t0 = cpu_s(pid), time.monotonic()
    sent = paced(port, rate, secs, names or [f"{tag}-{i:05d}" for i in range(n_streams)])
    cpu = (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
    r = col.wait(sent, 15, idle=2)
    return {"cpu": cpu, "missing": sent - r["count"], **lat_stats(r["lat"])}


def serve(d: DaemonRun, port: int, col: Collector, a: argparse.Namespace) -> dict[str, Any]:
    """start -> READY, idle CPU, the light load and 1k x 1 Hz."""
    out: dict[str, Any] = {}
    make_session(port, d.client_id)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        path = str(d.dir / "notify.sock")
        s.bind(path)
        proc = d.start(notify=path)
        out["ready_s"] = wait_ready(proc, s, 30)
    time.sleep(1.0)
    c0, t0 = cpu_s(proc.pid), time.monotonic()
    time.sleep(a.idle_s)
    out["idle_cpu"] = (cpu_s(proc.pid) - c0) / (time.monotonic() - t0) * 100
    out["light"] = load(port, col, proc.pid, a.light_rate, a.light_streams, a.secs, f"{d.name}-l")
    out["k1"] = load(port, col, proc.pid, 1000.0, a.k_streams, a.secs, f"{d.name}-k")
    d.stop()
    drop_session(port, d.client_id)
    return out


def checkpoint_s(log: Path, since: int) -> float | None:
    """The `seconds` of the first `checkpoint` log line after byte `since` of the daemon's log."""
    with open(log, "rb") as f:
        f.seek(since)
        for line in f:
            i = line.find(b"{")
            if i < 0:
                continue
            try:
                doc = json.loads(line[i:])
            except ValueError:
                continue
            if doc.get("event") == "checkpoint":
                return float(doc.get("seconds", 0.0))
    return None


def publish_streams(port: int, names: list[str], rate: float) -> None:
    """One reading for each stream of `names`, `rate` a second in bursts of 500."""
    pub = mqtt_load.RawPublisher(port)
    t0, start, burst = time.time() - 5, time.monotonic(), []
    for i, stream in enumerate(names):
        burst.append((mqtt_load.topic_part(f"sensors/{stream}"), reading(stream, t0, i)))
        if len(burst) == 500 or i == len(names) - 1:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pub.publish(burst)
            burst = []
            pub.poll()
    pub.close()


def ask_checkpoint(port: int) -> None:
    cmd = mqtt_load.RawPublisher(port)
    cmd.publish([(mqtt_load.topic_part("edge-lstm/command"), b'{"op": "checkpoint"}')])
    cmd.close()


def memory(d: DaemonRun, port: int, col: Collector, a: argparse.Namespace) -> dict[str, Any]:
    """RSS warm (`--warm-streams` streams seen), with `--mem-streams` live streams, and during and after
    their checkpoint. Per stream: (RSS after the checkpoint - RSS warm) / (streams - warm streams)."""
    n, warm = a.mem_streams, a.warm_streams
    # debug: the checkpoint's log line (durable/store.py) is at debug level
    d.env.update(settings_env(f"engine.max_streams={n},commands.enabled=true,log.level=debug"))
    make_session(port, d.client_id)
    proc = d.start()
    time.sleep(a.start_s)
    out: dict[str, Any] = {"rss0": rss_kb(proc.pid)}
    names = [f"{d.name}-m{i:06d}" for i in range(n)]
    col.watch(0, 0)
    publish_streams(port, names[:warm], a.mem_rate)
    col.wait(warm, a.timeout, idle=10)
    time.sleep(1.0)
    out["rss_warm"] = rss_kb(proc.pid)
    col.watch(0, 0)
    publish_streams(port, names[warm:], a.mem_rate)
    out["results"] = col.wait(n - warm, a.timeout, idle=10)["count"] + warm
    time.sleep(1.0)
    out["rss_full"] = rss_kb(proc.pid)
    log = d.dir / f"daemon.{d.starts}.log"
    # The checkpoint's impact on results, with and without one, over streams spread over the whole table
    # (as live sensors are): a reading dirties its row in every column, so a copy-on-write snapshot
    # costs the pages those rows are on.
    tag = f"{d.name}-c"
    live = names[:: max(1, n // a.ck_streams)][: a.ck_streams]
    out["ck_quiet"] = load(port, col, proc.pid, a.ck_rate, 0, a.ck_load_s, tag, live)
    since = log.stat().st_size
    out["peak_reset"] = reset_peak(proc.pid)
    total = TotalPeak(proc.pid)
    total.start()
    asker = threading.Timer(a.ck_delay_s, ask_checkpoint, (port,))
    asker.start()
    out["ck_load"] = load(port, col, proc.pid, a.ck_rate, 0, a.ck_load_s, tag, live)
    asker.join()
    deadline = time.monotonic() + a.timeout
    while (secs := checkpoint_s(log, since)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    total.done.set()
    total.join()
    out["ck_s"] = secs
    out["peak"] = rss_kb(proc.pid, "VmHWM")
    out["peak_total"], out["child_peak"] = total.peak, total.child_peak
    out["rss_after"] = rss_kb(proc.pid)
    out["per_stream_b"] = (out["rss_after"] - out["rss_warm"]) * 1024 / (n - warm)
    d.stop()
    drop_session(port, d.client_id)
    return out


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def lat_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    return f"{fmt(r.get('p50'), '.1f')}/{fmt(r.get('p99'), '.1f')}/{fmt(r.get('max'), '.0f')}"


def report(rows: list[tuple[str, dict[str, Any]]], relay: list[float], a: argparse.Namespace) -> None:
    print(
        f"light: {a.light_rate:g} readings/s over {a.light_streams} streams; 1k: 1,000/s over {a.k_streams} streams; "
        f"{a.secs:g} s each; latency p50/p99/max ms; CPU % of one core; memory: {a.mem_streams:,} streams"
    )
    head = (
        f"{'daemon':<12} {'light lat':>16} {'CPU':>5} {'miss':>4} {'1k lat':>16} {'CPU':>5} {'miss':>4} "
        f"{'idle %':>6} {'READY s':>7} {'warm MB':>7} {'RSS MB':>7} {'ckpt s':>6} {'peak MB':>7} "
        f"{'after MB':>8} {'B/strm':>6} {'drain/s':>8} {'/relay':>6}"
    )
    print(head)
    print("-" * len(head))
    relay_rate = statistics.mean(relay) if relay else None
    for name, r in rows:
        light, k1, m = r.get("light", {}), r.get("k1", {}), r.get("mem", {})
        mb = {k: (m[k] / 1024 if k in m else None) for k in ("rss_warm", "rss_full", "peak", "rss_after")}
        rate = r.get("drain")
        print(
            f"{name:<12} {lat_cell(light):>16} {fmt(light.get('cpu'), '.1f'):>5} {fmt(light.get('missing'), 'd'):>4} "
            f"{lat_cell(k1):>16} {fmt(k1.get('cpu'), '.1f'):>5} {fmt(k1.get('missing'), 'd'):>4} "
            f"{fmt(r.get('idle_cpu'), '.2f'):>6} {fmt(r.get('ready_s'), '.2f'):>7} "
            f"{fmt(mb['rss_warm'], '.0f'):>7} {fmt(mb['rss_full'], '.0f'):>7} {fmt(m.get('ck_s'), '.2f'):>6} "
            f"{fmt(mb['peak'], '.0f'):>7} {fmt(mb['rss_after'], '.0f'):>8} {fmt(m.get('per_stream_b'), '.0f'):>6} "
            f"{fmt(rate, ',.0f'):>8} {fmt(rate / relay_rate if rate and relay_rate else None, '.2f'):>6}"
        )
    if any(r.get("mem", {}).get("ck_load") for _, r in rows):
        print(
            f"checkpoint of {a.mem_streams:,} streams under {a.ck_rate:g} readings/s over {a.ck_streams:,} of them "
            f"({a.ck_load_s:g} s, asked {a.ck_delay_s:g} s in): latency p50/p99/max ms; peak = RSS + children's private"
        )
        print(
            f"{'daemon':<12} {'quiet':>16} {'with ckpt':>16} {'p99 ratio':>9} {'ckpt s':>6} {'miss':>4} "
            f"{'steady MB':>9} {'peak MB':>7} {'+child MB':>9} {'excess':>6}"
        )
        for name, r in rows:
            m = r.get("mem", {})
            q, c = m.get("ck_quiet", {}), m.get("ck_load", {})
            ratio = c["p99"] / q["p99"] if c.get("p99") and q.get("p99") else None
            steady, peak = m.get("rss_full"), max(m.get("peak") or 0, m.get("peak_total") or 0) or None
            excess = peak / steady - 1 if peak and steady else None
            print(
                f"{name:<12} {lat_cell(q):>16} {lat_cell(c):>16} {fmt(ratio, '.2f'):>9} {fmt(m.get('ck_s'), '.2f'):>6} "
                f"{fmt(c.get('missing'), 'd'):>4} {fmt(steady and steady / 1024, '.0f'):>9} "
                f"{fmt(peak and peak / 1024, '.0f'):>7} {fmt(m.get('child_peak', 0) / 1024, '.1f'):>9} "
                f"{fmt(excess, '+.0%'):>6}"
            )
    if relay:
        print(f"relay drain readings/s: {', '.join(f'{x:,.0f}' for x in relay)}")
    ratios(rows)


def ratios(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Each daemon's figures against the first daemon's (means over runs), from this run."""
    by: dict[str, list[dict[str, Any]]] = {}
    for name, r in rows:
        by.setdefault(name.rsplit("#", 1)[0], []).append(r)
    figures = {
        "light p99": lambda r: r.get("light", {}).get("p99"),
        "1k p99": lambda r: r.get("k1", {}).get("p99"),
        "1k CPU": lambda r: r.get("k1", {}).get("cpu"),
        "RSS/stream": lambda r: r.get("mem", {}).get("per_stream_b"),
        "ckpt p99": lambda r: r.get("mem", {}).get("ck_load", {}).get("p99"),
        "drain": lambda r: r.get("drain"),
    }
    names = list(by)
    if len(names) < 2:
        return
    base = names[0]
    for name in names[1:]:
        cells = []
        for label, get in figures.items():
            mine = [v for v in map(get, by[name]) if v is not None]
            theirs = [v for v in map(get, by[base]) if v is not None]
            if mine and theirs and statistics.mean(theirs):
                cells.append(f"{label} {statistics.mean(mine) / statistics.mean(theirs):.2f}x")
        print(f"ratio {name} / {base}: " + ", ".join(cells))


def run_drain(d: DaemonRun, port: int, col: Collector, a: argparse.Namespace) -> float | None:
    make_session(port, d.client_id)
    queue_backlog(port, a.backlog, a.streams, f"{d.name}-")
    proc = d.start()
    col.watch(proc.pid, a.backlog)
    r = drain(col, proc.pid, a.backlog, a.timeout)
    d.stop()
    drop_session(port, d.client_id)
    return r.get("rate")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--runs", type=int, default=1, help="rounds; every daemon once per round, in turn")
    ap.add_argument("--secs", type=float, default=15.0, help="seconds of each load phase")
    ap.add_argument("--light-rate", type=float, default=200.0)
    ap.add_argument("--light-streams", type=int, default=100)
    ap.add_argument("--k-streams", type=int, default=1000)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--start-s", type=float, default=3.0, help="memory phase: wait after start")
    ap.add_argument("--mem-streams", type=int, default=100_000)
    ap.add_argument(
        "--mem-rate", type=float, default=10_000, help="memory phase: new streams a second (a flood stalls: see docs)"
    )
    ap.add_argument("--warm-streams", type=int, default=1_000, help="memory phase: streams before the first RSS")
    ap.add_argument("--ck-load-s", type=float, default=6.0, help="memory phase: load around the checkpoint")
    ap.add_argument("--ck-rate", type=float, default=1000.0, help="memory phase: its readings/s")
    ap.add_argument("--ck-streams", type=int, default=1000, help="memory phase: over this many streams, spread")
    ap.add_argument("--ck-delay-s", type=float, default=2.0, help="memory phase: checkpoint asked this far in")
    ap.add_argument("--backlog", type=int, default=20_000)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--broker-nodelay", action="store_true", help="mosquitto's set_tcp_nodelay true (no Nagle)")
    ap.add_argument("--no-serve", action="store_true", help="no start, idle, light and 1k phases")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-drain", action="store_true")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="another source tree")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SECTION.KEY=VALUE[,...]")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the broker and daemons on the way out
    a.streams = 200  # the drain's, as bench_mqtt's (run_relay reads it)
    if a.quick:
        a.secs, a.light_rate, a.light_streams, a.k_streams = 2.0, 50.0, 10, 50
        a.idle_s, a.start_s, a.mem_streams, a.warm_streams, a.backlog, a.timeout = 1.0, 2.0, 600, 100, 300, 60.0
        a.ck_load_s, a.ck_delay_s, a.ck_rate, a.ck_streams = 2.0, 0.5, 50.0, 10
    consumers: list[Consumer] = [("daemon", ROOT, {})]
    consumers += [(n, Path(p).resolve(), {}) for n, p in (x.split("=", 1) for x in a.tree)]
    consumers += [(n, ROOT, settings_env(v)) for n, v in (x.split("=", 1) for x in a.variant)]
    extra = f"max_queued_messages {max(a.backlog, a.mem_streams) * 2 + 10_000}\nmax_inflight_messages 1000\n"
    extra += "autosave_interval 1800\n"
    if a.broker_nodelay:
        extra += "set_tcp_nodelay true\n"
    rows: list[tuple[str, dict[str, Any]]] = []
    relay: list[float] = []
    with bench_broker(extra) as (tmp, b, col):
        for rep in range(a.runs):
            if not a.no_drain:
                relay.append(run_relay(b.port, col, a).get("rate", 0.0))
            for name, src, env in consumers:
                r: dict[str, Any] = {}
                runs = [DaemonRun(f"{name}{rep}{k}", src, b.port, tmp, dict(env)) for k in ("s", "d", "m")]
                try:
                    if not a.no_serve:
                        r.update(serve(runs[0], b.port, col, a))
                    if not a.no_drain:
                        r["drain"] = run_drain(runs[1], b.port, col, a)
                    if not a.no_memory:
                        r["mem"] = memory(runs[2], b.port, col, a)
                finally:
                    for d in runs:
                        d.stop()
                rows.append((f"{name}#{rep}" if a.runs > 1 else name, r))
                print(f"... {name} run {rep + 1} done", file=sys.stderr, flush=True)
    report(rows, relay, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
