#!/usr/bin/env python3
"""What storing the state table's float64 columns as float32 and int64 ones as int32 changes (issue 22).

    .venv/bin/python bench/precision.py            # synthetic, a SKAB file and a NAB file; exit 1 over 1e-4

The golden replays of bench/golden_scores.py (synthetic: three streams through the packaged model; SKAB
valve1/0 and NAB ec2_cpu_utilization_825cc2 through a model `fit` on their first rows, read in place
from ../shared), each twice in this process: the table as it is stored (`edge_lstm.state.FLOAT32_STORAGE`,
float32 / int32 unless a column is declared `exact`, computed in float64 / int64) and all as declared
(the reference). Compared per
result: every number of its published payload (score, the channels' values, prediction), the largest
absolute difference, and how many flags and alarm events differ. Exit 1 if a score differs by more than
`--tolerance` (1e-4). Flags that differ are readings within rounding of a threshold.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from golden_scores import fitted, shared_dir, synthetic_csv  # noqa: E402

import edge_lstm.state  # noqa: E402


def numbers(doc: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON document, by its path; booleans as 0/1 under their path + "?"."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(doc, bool):
        out[prefix + "?"] = float(doc)  # a flag: counted when it differs
    elif isinstance(doc, int | float):
        out[prefix] = float(doc)
    return out


def replay(csv_text: str, model_path: Path | None, batch: int, float32: bool) -> list[tuple[dict[str, float], bool]]:
    from edge_lstm.cli.replay import replay as run
    from edge_lstm.engine import Engine
    from edge_lstm.onnx_model import load_model
    from edge_lstm.result import Result, encode

    edge_lstm.state.FLOAT32_STORAGE = float32
    try:
        model = load_model(model_path)
        engine = Engine(model, max_streams=10_000)
        out: list[tuple[dict[str, float], bool]] = []

        def on_result(r: Result, line: int) -> None:
            out.append((numbers(json.loads(encode(r))), r.alarm_event is not None))

        run(io.StringIO(csv_text), model, on_result, batch=batch, engine=engine)
        return out
    finally:
        edge_lstm.state.FLOAT32_STORAGE = True


def compare(new: list[tuple[dict[str, float], bool]], ref: list[tuple[dict[str, float], bool]]) -> dict[str, Any]:
    worst: dict[str, float] = {}
    flags = events = 0
    for (a, ea), (b, eb) in zip(new, ref, strict=True):
        events += ea != eb
        for key in a.keys() | b.keys():
            x, y = a.get(key, float("nan")), b.get(key, float("nan"))
            if key.endswith("?"):
                flags += x != y
                continue
            if x != x and y != y:  # both NaN (not published yet)
                continue
            field = key.split("[")[0]
            worst[field] = max(worst.get(field, 0.0), abs(x - y) if x == x and y == y else float("inf"))
    return {"results": len(new), "worst": worst, "flags": flags, "alarm_events": events}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=shared_dir())
    ap.add_argument("--cache", type=Path, default=Path("/tmp/edge-lstm-golden"), help="fitted models go here")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    skab = (a.shared / "skab" / "valve1" / "0.csv").read_text()
    nab = (a.shared / "nab" / "data" / "realAWSCloudwatch" / "ec2_cpu_utilization_825cc2.csv").read_text()
    nab_train = min(750, int(0.15 * (len(nab.splitlines()) - 1)))
    cases: dict[str, tuple[str, Path | None, int]] = {
        "synthetic": (synthetic_csv(), None, 7),
        "skab": (skab, fitted(skab, 400, a.cache, "skab-valve1-0"), 64),
        "nab": (nab, fitted(nab, nab_train, a.cache, "nab-ec2-825cc2"), 1024),
    }
    bad = 0
    for name, (text, model, batch) in cases.items():
        r = compare(replay(text, model, batch, True), replay(text, model, batch, False))
        score = r["worst"].get("score", 0.0)
        bad += score > a.tolerance
        others = ", ".join(f"{k} {v:.2g}" for k, v in sorted(r["worst"].items()) if k not in ("score", "ts"))
        print(
            f"{name:<10} {r['results']:>6} results  score max |float32 - float64| {score:.2e}  "
            f"flags differing {r['flags']}  alarm events differing {r['alarm_events']}  (others: {others})"
        )
    print(f"tolerance {a.tolerance:g}: {'met' if not bad else f'exceeded in {bad} replay(s)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
