#!/usr/bin/env python3
"""Make the packaged default model, edge_lstm/data/default.onnx, reproducibly.

Normal operation of several simulated machines (edge_lstm.demo.simulate, one seed per machine, 1 s
interval) is written to a CSV, and `edge-lstm-export fit` trains, exports, parity-checks and
calibrates a small next-step forecaster on it — the same path a user takes with their own CSV.

    .venv/bin/python scripts/make_default_model.py [--out edge_lstm/data/default.onnx]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from edge_lstm.demo.simulate import FEATURES, normal_series
from edge_lstm_export.cli import main as export_main

ROOT = Path(__file__).resolve().parents[1]
MACHINES = 8  # seeds 0..7: different duty cycles, loads and ambient temperatures
STEPS = 5000  # per machine, 1 s apart (~83 minutes each); the last 20% is held out for calibration
TS0 = 1_700_000_000


def write_csv(path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stream", "ts", *FEATURES])
        for seed in range(MACHINES):
            for t, row in enumerate(normal_series(STEPS, seed=seed)):
                w.writerow([f"machine-{seed}", TS0 + t, *row])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "edge_lstm" / "data" / "default.onnx")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-lstm-default-") as tmp:
        data = Path(tmp) / "normal.csv"
        write_csv(data)
        return export_main(
            [
                "fit",
                str(data),
                "--out",
                str(args.out),
                "--name",
                "default-forecaster",
                "--version",
                "1.0.0",
                "--hidden",
                "32",
                "--layers",
                "1",
                "--epochs",
                "40",
                "--seed",
                "0",
                "--warmup-steps",
                "10",
                "--sample-interval",
                "1",
                "--quantile",
                "0.999",
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
