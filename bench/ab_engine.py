"""Engine CPU per reading of two source trees of edge-lstm, alternated in one run (a refactoring's cost).

    .venv/bin/python bench/ab_engine.py --old /tmp/old-tree [--new .] [--rounds 7]

Make the old tree with `git archive <commit> | tar -x -C /tmp/old-tree`. Each trial runs this file in a
subprocess with PYTHONPATH set to one tree (`--trial`), alternating old and new (ABBA order over rounds,
so drift of a shared machine hits both alike), and times `Engine.process` (decode and encode excluded)
on the packaged model in the two regimes a daemon sees:

  steady    `--streams` streams past their baseline (warmed up untimed for `--warmup` readings each),
            then `--steps` rounds of one reading per stream in batches of `--batch`: µs per reading;
  single    one reading per `process` call (a quiet daemon: the per-round fixed cost): µs per call.

`--shuffle` hands each round's readings over in another arrival order (streams first seen in one order,
then reporting with jitter) instead of always the same.

Timed in CPU time (time.process_time: what the process used, not what it waited for a core on a
shared machine). Reported: the median over rounds of each tree's time and of the per-round new/old
ratios. On a busy shared machine that still spreads ±30 %; `--instructions` counts instructions
instead (valgrind's callgrind, repeatable within ~0.3 %): per tree and mode, one run that counts only
`--calls` engine calls of `--streams` readings (steady) or of one reading (single), after the warm-up.

    .venv/bin/python bench/ab_engine.py --old /tmp/old-tree --instructions --streams 23 --calls 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def trial(streams: int, warmup: int, steps: int, batch: int, shuffle: bool = False) -> dict[str, float]:
    import numpy as np

    from edge_lstm import Engine, Reading, load_model

    model = load_model(None)
    engine = Engine(model, max_streams=streams + 1)
    rng = np.random.default_rng(0)
    offset = np.asarray(model.meta.scaling.offset)
    scale = np.asarray(model.meta.scaling.scale)
    names = [f"m{i}" for i in range(streams)]
    t0 = 1_700_000_000.0
    arrival = np.random.default_rng(1)

    def step(t: int) -> list[Reading]:
        v = offset + scale * rng.normal(0, 0.3, (streams, len(offset)))
        readings = [Reading(s, t0 + t, tuple(row)) for s, row in zip(names, v.tolist())]
        if shuffle:  # each round in another arrival order
            arrival.shuffle(readings)
        return readings

    for t in range(warmup):
        rounds = step(t)
        for start in range(0, streams, batch):
            engine.process(rounds[start : start + batch])
    timed = 0.0
    for t in range(warmup, warmup + steps):
        rounds = step(t)
        for start in range(0, streams, batch):
            part = rounds[start : start + batch]
            a = time.process_time()
            engine.process(part)
            timed += time.process_time() - a
    steady_us = timed / (streams * steps) * 1e6
    single = step(warmup + steps)
    a = time.process_time()
    for r in single:
        engine.process([r])
    single_us = (time.process_time() - a) / len(single) * 1e6
    return {"steady_us": steady_us, "single_us": single_us}


def ir_trial(streams: int, warmup: int, mode: str, calls: int, shuffle: bool = False) -> None:
    """Warm `streams` streams up for `warmup` readings, then `calls` engine calls of all of them
    (mode "steady") or of one reading (mode "single"), run inside sys.call_tracing: `instructions`
    counts only what runs inside that function (callgrind's --toggle-collect=sys_call_tracing)."""
    import numpy as np

    from edge_lstm import Engine, Reading, load_model

    model = load_model(None)
    engine = Engine(model, max_streams=streams + 1)
    rng = np.random.default_rng(0)
    offset, scale = np.asarray(model.meta.scaling.offset), np.asarray(model.meta.scaling.scale)
    names = [f"m{i}" for i in range(streams)]
    arrival = np.random.default_rng(1)

    def step(t: int) -> list[Reading]:
        v = offset + scale * rng.normal(0, 0.3, (streams, len(offset)))
        readings = [Reading(s, 1_700_000_000.0 + t, tuple(row)) for s, row in zip(names, v.tolist())]
        if shuffle:  # each round in another arrival order
            arrival.shuffle(readings)
        return readings

    for t in range(warmup):
        engine.process(step(t))
    # The readings are made before the counted part: it is the engine calls alone.
    if mode == "steady":
        batches = [step(warmup + k) for k in range(calls)]
    else:
        batches = [[r] for k in range(calls // streams + 1) for r in step(warmup + k)][:calls]

    def counted() -> None:
        for batch in batches:
            engine.process(batch)

    sys.call_tracing(counted, ())


def instructions(args: argparse.Namespace) -> None:
    """Instructions per engine call of each tree (callgrind; see the module docstring). Only the engine
    calls are counted (collection toggled on inside sys.call_tracing), with a fixed hash seed: the
    same tree counts within ~0.3 % from run to run, where differences of separate runs (imports, model
    load and warm-up included) moved by ~1M instructions per call."""
    import re

    def count(tree: Path, mode: str) -> int:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no"]
        cmd += ["--toggle-collect=sys_call_tracing", sys.executable, str(Path(__file__).resolve())]
        cmd += ["--ir-trial", mode, str(args.calls), "--streams", str(args.streams), "--warmup", str(args.warmup)]
        cmd += ["--shuffle"] if args.shuffle else []
        env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "PYTHONHASHSEED": "0"}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/")
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None or int(found.group(1)) == 0:
            # 0: this Python's symbols do not name sys_call_tracing (a stripped build).
            raise SystemExit(f"no instruction count from valgrind: {out.stderr[-500:]}")
        return int(found.group(1))

    per_call: dict[str, dict[str, float]] = {}
    for which, tree in (("old", args.old), ("new", args.new)):
        per_call[which] = {m: count(tree, m) / args.calls for m in ("steady", "single")}
        print(f"{which}: " + "  ".join(f"{m} {v:,.0f} Ir per call" for m, v in per_call[which].items()), flush=True)
    for m, label in (("steady", f"{args.streams} readings per call"), ("single", "one reading per call")):
        old, new = per_call["old"][m], per_call["new"][m]
        print(f"  {label:24s} old {old:12,.0f}   new {new:12,.0f}   new/old {new / old:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, help="the old source tree (required unless --trial)")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=320, help="untimed readings per stream (past the baseline)")
    ap.add_argument("--steps", type=int, default=20, help="timed readings per stream")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead")
    ap.add_argument("--shuffle", action="store_true", help="each round's readings in another arrival order")
    ap.add_argument("--calls", type=int, default=200, help="--instructions: engine calls counted per mode")
    ap.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ir-trial", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trial:
        print(json.dumps(trial(args.streams, args.warmup, args.steps, args.batch, args.shuffle)))
        return 0
    if args.ir_trial:
        ir_trial(args.streams, args.warmup, args.ir_trial[0], int(args.ir_trial[1]), args.shuffle)
        return 0
    if args.old is None:
        ap.error("--old DIR is required")
    if args.instructions:
        instructions(args)
        return 0
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for k in range(args.rounds):
        order = ("old", "new") if k % 2 == 0 else ("new", "old")
        for which in order:
            tree = (args.old if which == "old" else args.new).resolve()
            env = {**os.environ, "PYTHONPATH": str(tree)}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--trial"]
            cmd += ["--streams", str(args.streams), "--warmup", str(args.warmup), "--steps", str(args.steps)]
            cmd += ["--batch", str(args.batch)] + (["--shuffle"] if args.shuffle else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/")
            runs[which].append(json.loads(out.stdout))
        print(
            f"round {k}: "
            + "  ".join(f"{w} {runs[w][-1]['steady_us']:.2f}/{runs[w][-1]['single_us']:.1f} µs" for w in runs)
        )
    print(
        f"\n{args.streams} streams, batch {args.batch}, {args.steps} timed readings each after {args.warmup}; "
        f"{args.rounds} rounds, medians:"
    )
    for key, label in (("steady_us", "steady state, µs per reading"), ("single_us", "one reading per call, µs")):
        old = statistics.median(r[key] for r in runs["old"])
        new = statistics.median(r[key] for r in runs["new"])
        ratio = statistics.median(n[key] / o[key] for n, o in zip(runs["new"], runs["old"]))
        print(f"  {label:32s} old {old:8.2f}   new {new:8.2f}   new/old {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
