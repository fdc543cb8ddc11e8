"""Golden scores: a hash of every byte the engine publishes on a few replays, to prove that a refactoring
of the scoring code is behaviour-preserving (issue 23: "results byte-identical before and after").

    .venv/bin/python bench/golden_scores.py                 # print the hashes
    .venv/bin/python bench/golden_scores.py --check bench/golden_scores.json   # compare, exit 1 if any differ
    .venv/bin/python bench/golden_scores.py --write bench/golden_scores.json   # record them

Replays, each through `edge_lstm.cli.replay.replay` (the `edge-lstm replay` code path) in small batches
so that rounds mix streams at different stages:
  synthetic  three interleaved streams (level shift, stuck sensor, spike, a gap) through the packaged model;
  skab       ../shared/skab/valve1/0.csv (read in place) through a model `fit` on its first 400 rows;
  nab        ../shared/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv through a model `fit` on
             its first 15 %.
What is hashed per result: its published payload (`result.encode`), its alarm event payload, the CSV row
of `edge-lstm replay`; at the end, `inspect`'s description of every stream and every state column of
every stream (the checkpointed state). Fitted models are cached (--cache) and their sha256 recorded: a
hash that differs with a different model sha256 means `fit` changed, not the scoring.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """../shared next to the checkout or next to its worktree folder."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


def synthetic_csv() -> str:
    """Three streams of the packaged model's features (temperature, vibration, current), interleaved."""
    rng = np.random.default_rng(7)
    lines = ["ts,stream,temperature,vibration,current"]
    n = 1400
    series = []
    for k in range(3):
        t = np.arange(n)
        current = 9.7 + 2.0 * np.sin(2 * np.pi * t / 120 + k) + rng.normal(0, 0.1, n)
        temp = 40 + 0.8 * (current - 9.7) + rng.normal(0, 0.05, n)
        vib = 0.48 + 0.02 * (current - 9.7) + rng.normal(0, 0.015, n)
        x = np.stack([temp, vib, current], axis=1)
        if k == 0:
            x[700:900, 0] += 1.5  # level shift of the temperature
        if k == 1:
            x[600:800, 1] = x[599, 1]  # stuck vibration sensor
        if k == 2:
            x[650, 2] += 8.0  # spike
        series.append(x)
    for i in range(n):
        for k in range(3):
            if k == 2 and 1000 <= i < 1100:
                continue  # stream 2 goes offline: a gap of 100 s
            v = series[k][i]
            lines.append(f"{1_700_000_000 + i},m{k},{v[0]:.6g},{v[1]:.6g},{v[2]:.6g}")
    return "\n".join(lines) + "\n"


def fitted(csv_text: str, rows: int, cache: Path, name: str) -> Path:
    """A model `fit` on the first `rows` rows of `csv_text` (cached in `cache`)."""
    out = cache / f"{name}.onnx"
    if out.exists():
        return out
    from edge_lstm_export.fit import FitConfig, fit_csv

    head = cache / f"{name}-train.csv"
    head.write_text("".join(csv_text.splitlines(keepends=True)[: rows + 1]))
    fit_csv(head, out, config=FitConfig(seed=0, epochs=8), progress=None)
    return out


def replay_hashes(csv_text: str, model_path: Path | None, batch: int) -> dict[str, str]:
    from edge_lstm.cli.replay import replay, result_row
    from edge_lstm.engine import Engine
    from edge_lstm.onnx_model import load_model
    from edge_lstm.result import Result, encode, encode_alarm

    model = load_model(model_path)
    engine = Engine(model, max_streams=10_000)
    payloads, rows = hashlib.sha256(), hashlib.sha256()
    meta = {"name": model.meta.name, "version": model.meta.version}

    def on_result(r: Result, line: int) -> None:
        payloads.update(encode(r) + b"\n")
        if r.alarm_event is not None:
            payloads.update(encode_alarm(r.alarm_event, meta) + b"\n")
        rows.update(repr(result_row(r, line)).encode() + b"\n")

    summary = replay(io.StringIO(csv_text), model, on_result, batch=batch, engine=engine)
    state = hashlib.sha256()
    for stream in sorted(engine.table.slots):
        state.update(json.dumps(engine.describe_stream(stream), sort_keys=True).encode())
        row = engine.table.row(stream)
        for key in sorted(row.columns):
            # Column names may change (a rename keeps a migration); the values may not.
            state.update(np.ascontiguousarray(row.columns[key]).tobytes())
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest() if model_path is not None else "packaged"
    return {
        "payloads": payloads.hexdigest(),
        "replay_rows": rows.hexdigest(),
        "state": state.hexdigest(),
        "readings": str(summary.readings),
        "anomalies": str(summary.anomalies),
        "model_sha256": sha,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=shared_dir())
    ap.add_argument("--cache", type=Path, default=Path("/tmp/edge-lstm-golden"), help="fitted models go here")
    ap.add_argument("--check", type=Path, help="compare with these recorded hashes; exit 1 on a difference")
    ap.add_argument("--write", type=Path, help="record the hashes here")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    skab = (args.shared / "skab" / "valve1" / "0.csv").read_text()
    nab = (args.shared / "nab" / "data" / "realAWSCloudwatch" / "ec2_cpu_utilization_825cc2.csv").read_text()
    nab_train = min(750, int(0.15 * (len(nab.splitlines()) - 1)))
    cases: dict[str, tuple[str, Path | None, int]] = {
        "synthetic": (synthetic_csv(), None, 7),
        "skab": (skab, fitted(skab, 400, args.cache, "skab-valve1-0"), 64),
        "nab": (nab, fitted(nab, nab_train, args.cache, "nab-ec2-825cc2"), 1024),
    }
    got: dict[str, Any] = {name: replay_hashes(text, model, batch) for name, (text, model, batch) in cases.items()}
    print(json.dumps(got, indent=2))
    if args.write is not None:
        args.write.write_text(json.dumps(got, indent=2) + "\n")
    if args.check is not None:
        want = json.loads(args.check.read_text())
        bad = [
            f"{name}.{key}: {want[name][key]} -> {value}"
            for name, hashes in got.items()
            for key, value in hashes.items()
            if want.get(name, {}).get(key) != value
        ]
        for line in bad:
            print("DIFFERS", line, file=sys.stderr)
        print("byte-identical" if not bad else f"{len(bad)} difference(s)", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
