#!/usr/bin/env python3
"""bench_mqtt's latency phase alone, for daemons and variants in turn, with each process's CPU share.

    python bench/latency_probe.py --rate 5000 --runs 3 --tree old=/path/to/tree --variant mb128=engine.max_batch=128
    python bench/latency_probe.py --rate 11000 --nice -10      # the measurement's processes before other jobs
    python bench/latency_probe.py --rate 5000 --paho-load      # the paho publisher and collector (rounds 1-3)

Each run: a fresh daemon (this checkout, `--tree NAME=PATH` another source tree, `--variant
NAME=SECTION.KEY=VALUE,...` other settings) on the run's private broker, 3 s to start, then
`--secs` s of readings at `--rate` over 200 streams (bench_mqtt's `latency`, in mqtt_phases.py). Prints
p50 / p99 publish → result, the CPU share (% of one core) of publisher, collector, broker and daemon, and per
daemon thread its CPU share and voluntary / involuntary context switches per second (the worker is the
main thread, paho's network thread the other busy one). A tree whose daemon writes per-reading stage
times to `$STAGE_OUT` (a JSON list of [ts, arrival, batch taken, results handed, batch size]) gets them
summarised too: that is how docs/performance.md's round-4 stage table was made, with a copy of
`Daemon._process` stamping each reading. `--nice N` renices this process before the broker, collector
and daemons start (they inherit it; negative values need root).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import mqtt_traffic  # noqa: E402
from mqtt_consumers import DaemonRun, settings_env  # noqa: E402
from mqtt_phases import latency  # noqa: E402
from mqtt_session import drop_session, make_session  # noqa: E402
from mqtt_traffic import bench_broker, broker_pid  # noqa: E402
from proc_cpu import TICK, cpu_s  # noqa: E402


def threads(pid: int) -> dict[int, tuple[float, int, int]]:
    """Per thread (tid - pid): CPU seconds, voluntary and involuntary context switches."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{t}/status") as f:
                status = f.read()
        except OSError:
            continue
        v = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        iv = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
        out[int(t) - pid] = ((int(st[11]) + int(st[12])) / TICK, v, iv)
    return out


def stages(path: str) -> str | None:
    try:
        with open(path) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return None
    if not rows:
        return None

    def pct(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{xs[len(xs) // 2] * 1000:.1f}/{xs[int(len(xs) * 0.99)] * 1000:.1f}/{xs[-1] * 1000:.1f}"

    return (
        f"  stages p50/p99/max ms: publish->arrival {pct([r[1] - r[0] for r in rows])}"
        f"  arrival->batch {pct([r[2] - r[1] for r in rows])}  batch->handed {pct([r[3] - r[2] for r in rows])}"
        f"  publish->handed {pct([r[3] - r[0] for r in rows])};"
        f" batch size p50/p99/max {pct([r[4] / 1000 for r in rows]).replace('.0', '')}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=SECTION.KEY=VALUE[,...]")
    ap.add_argument("--paho-load", action="store_true")
    ap.add_argument("--nice", type=int, default=0)
    a = ap.parse_args()
    mqtt_traffic.PAHO_LOAD = a.paho_load  # read at call time by its Collector and paced
    if a.nice:
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    ns = argparse.Namespace(latency_s=a.secs, streams=a.streams)
    consumers: list[tuple[str, Path, dict[str, str]]] = [("daemon", ROOT, {})]
    consumers += [(n, ROOT, settings_env(v)) for n, v in (x.split("=", 1) for x in a.variant)]
    consumers += [(n, Path(p).resolve(), {}) for n, p in (x.split("=", 1) for x in a.tree)]
    extra = "max_queued_messages 50000\nmax_inflight_messages 1000\nautosave_interval 1800\n"
    with bench_broker(extra) as (tmp, b, col):
        for rep in range(a.runs):
            for name, src, env in consumers:
                d = DaemonRun(f"{name}{rep}", src, b.port, tmp, env)
                stage_file = str(tmp / f"stages.{name}{rep}.json")
                d.env["STAGE_OUT"] = stage_file
                make_session(b.port, d.client_id)
                try:
                    proc = d.start()
                    time.sleep(3)
                    pids = {"publisher": os.getpid(), "collector": col.proc.pid or 0}
                    pids |= {"broker": broker_pid(b), "daemon": proc.pid}
                    c0, th0, t0 = {k: cpu_s(p) for k, p in pids.items()}, threads(proc.pid), time.monotonic()
                    r: dict[str, Any] = latency(b.port, col, a.rate, ns, d.name, proc.pid, broker_pid(b))
                    el = time.monotonic() - t0
                    cpu = {k: (cpu_s(p) - c0[k]) / el * 100 for k, p in pids.items()}
                    th1 = threads(proc.pid)
                finally:
                    d.stop()
                drop_session(b.port, d.client_id)
                print(
                    f"{name:<8} rate {a.rate:,.0f}/s  p50 {r.get('p50_ms', 0):.1f} ms  p99 {r.get('p99_ms', 0):.1f} ms"
                    "  CPU % " + "  ".join(f"{k} {v:.0f}" for k, v in cpu.items()),
                    flush=True,
                )
                busy = []
                for t, (c, v, iv) in th1.items():
                    c_, v_, iv_ = th0.get(t, (0.0, 0, 0))
                    if c - c_ > 0.01 * el:
                        share, vol, invol = (c - c_) / el * 100, (v - v_) / el, (iv - iv_) / el
                        busy.append(f"{t}: CPU {share:.0f} %, {vol:.0f} vol./s, {invol:.0f} invol./s")
                print("  daemon threads (tid - pid): " + " | ".join(busy))
                if (line := stages(stage_file)) is not None:
                    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
