"""`replay` and `evaluate` end with one line saying what happened: readings, warming up, flagged,
alarms raised and cleared with their times, the highest score and when (issue 25)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from support.models import make_step_model

from edge_lstm import load_model
from edge_lstm.cli.replay import replay
from edge_lstm.cli.story import when

T0 = 1_700_000_000
N, START, END = 800, 600, 700  # a level shift of 30 sd on feature b over readings [START, END)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("story")
    model = make_step_model(tmp / "m.onnx", features=("a", "b", "c"))
    x = np.random.default_rng(0).normal(0, 0.1, size=(N, 3))
    x[START:END, 1] += 3.0
    rows = ["ts,a,b,c,anomaly"] + [
        f"{T0 + t},{x[t, 0]:.5f},{x[t, 1]:.5f},{x[t, 2]:.5f},{int(START <= t < END)}" for t in range(N)
    ]
    csv = tmp / "shift.csv"
    csv.write_text("\n".join(rows) + "\n")
    return model, csv


def parse(line: str) -> dict[str, str]:
    m = re.fullmatch(
        r"summary: (?P<readings>\d+) readings, (?P<warming>\d+) warming up, (?P<flagged>\d+) flagged; "
        r"alarms raised (?P<raised>\d+)(?: \((?P<raised_at>[^)]*)\))?, cleared (?P<cleared>\d+)"
        r"(?: \((?P<cleared_at>[^)]*)\))?; highest score (?P<top>\S+) \((?P<top_at>[^)]*)\)",
        line,
    )
    assert m, line
    return m.groupdict()


def seconds(text: str) -> float:
    """The time of 'stream at 2023-11-14T22:23:20Z' as epoch seconds."""
    return datetime.fromisoformat(text.rsplit(" at ", 1)[1].split(",")[0].replace("Z", "+00:00")).timestamp()


def test_replay_summary_says_what_happened(shifted: tuple[Path, Path]) -> None:
    model, csv = shifted
    results = []
    summary = replay(io.StringIO(csv.read_text()), load_model(model), lambda r, line: results.append(r))
    s = parse(summary.render().splitlines()[-1].removeprefix("replay: "))
    assert int(s["readings"]) == N == len(results)
    assert int(s["warming"]) == sum(r.warming_up for r in results)
    assert int(s["flagged"]) == sum(r.anomaly for r in results) > 90
    raised = [r for r in results if r.alarm_event is not None and r.alarm_event.state == "raised"]
    assert int(s["raised"]) == len(raised) == 1
    assert s["raised_at"] == f"replay at {when(raised[0].ts)}" and T0 + START <= raised[0].ts < T0 + END
    top = max(results, key=lambda r: r.score)
    assert float(s["top"]) == pytest.approx(top.score, rel=1e-5)
    assert seconds(s["top_at"]) == top.ts and f"line {int(top.ts - T0) + 2}" in s["top_at"]


def test_evaluate_ends_with_the_same_line(shifted: tuple[Path, Path]) -> None:
    model, csv = shifted
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "evaluate", str(csv), "--model", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    s = parse(proc.stdout.strip().splitlines()[-1])
    assert int(s["readings"]) == N and int(s["raised"]) == 1
    assert T0 + START <= seconds(s["raised_at"]) < T0 + END
    assert s["raised_at"].startswith("shift.csv at ")


def test_event_times_are_utc_iso() -> None:
    assert when(1764230411.0) == "2025-11-27T08:00:11Z"
    assert when(1764230411.25) == "2025-11-27T08:00:11.250Z"
