"""`edge-lstm evaluate`: the metrics against hand-counted cases, and the command on a labelled CSV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.models import make_step_model

from edge_lstm.cli.evaluate import FileRun, Quality, segments


def test_segments() -> None:
    assert segments([0, 1, 1, 0, 0, 1, 0, 1]) == [(1, 3), (5, 6), (7, 8)]
    assert segments([]) == [] and segments([0, 0]) == []


def test_metrics_by_hand() -> None:
    run = FileRun("f")
    run.labels = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0]
    run.flags = [1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    run.alarm = [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    run.raised = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    run.ts = [float(t) for t in range(0, 100, 10)]  # 10 s apart
    q = Quality()
    q.add(run)
    m = q.metrics()
    # TP 2 (rows 3, 4), FP 1 (row 0), FN 3 (rows 2, 7, 8), TN 4.
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 3, 4)
    assert m["f1"] == pytest.approx(4 / 8)
    assert m["far_pct"] == pytest.approx(20.0) and m["mar_pct"] == pytest.approx(60.0)
    assert (m["segments"], m["segments_flagged"], m["segments_alarmed"]) == (2, 1, 1)
    assert m["median_flag_delay"] == 1 and m["median_alarm_delay"] == 2
    assert m["alarms"] == 1 and m["alarm_precision"] == 1.0 and m["false_alarms"] == 0
    assert m["false_alarms_per_day"] == 0.0  # 5 normal rows x 10 s of normal operation, no alarm on them


def test_evaluate_command_on_a_labelled_csv(tmp_path: Path) -> None:
    """A level shift injected into a stream: found, and the metrics printed as JSON."""
    model = make_step_model(tmp_path / "m.onnx", features=("a", "b", "c"))
    rng = np.random.default_rng(0)
    n = 800
    x = rng.normal(0, 0.1, size=(n, 3))
    x[600:700, 1] += 3.0  # 30 sd, 100 readings
    labels = np.zeros(n, int)
    labels[600:700] = 1
    lines = ["ts,a,b,c,anomaly"] + [
        f"{1_700_000_000 + t},{x[t, 0]:.5f},{x[t, 1]:.5f},{x[t, 2]:.5f},{labels[t]}" for t in range(n)
    ]
    csv = tmp_path / "labelled.csv"
    csv.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_lstm",
            "evaluate",
            str(csv),
            "--model",
            str(model),
            "--json",
            "--score-from",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["rows"] == n - 300 and m["segments"] == 1
    assert m["segments_flagged"] == 1 and m["segments_alarmed"] == 1
    assert m["median_flag_delay"] <= 5
    # The whole fault is flagged from its second reading (one reading lifts the smoothed deviation by at
    # most scoring.influence x its threshold, and this untrained model's forecast channel misses it)...
    assert m["tp"] == 99 and m["fn"] == 1 and m["median_flag_delay"] == 1
    # ...and the smoothed deviation settles after it: the flags after the fault are its tail (bounded by
    # the same influence: ~span * ln(influence) readings), nothing before it.
    assert m["fp"] < 40 and m["false_alarms"] == 0


def test_evaluate_refuses_a_csv_without_labels(tmp_path: Path) -> None:
    model = make_step_model(tmp_path / "m.onnx", features=("a", "b", "c"))
    csv = tmp_path / "nolabel.csv"
    csv.write_text("ts,a,b,c\n1700000000,1,2,3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "evaluate", str(csv), "--model", str(model)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no 'anomaly' column" in proc.stderr
    assert "Traceback" not in proc.stderr
