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
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import mqtt_traffic  # noqa: E402
from mqtt_consumers import DaemonRun, settings_env  # noqa: E402
from mqtt_phases import relay_under_load, run_daemon, run_relay, steady  # noqa: E402
from mqtt_session import drop_session, make_session  # noqa: E402
from mqtt_traffic import bench_broker, broker_pid  # noqa: E402


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
    mqtt_traffic.PAHO_LOAD = a.paho_load  # read at call time by its Collector and paced
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
