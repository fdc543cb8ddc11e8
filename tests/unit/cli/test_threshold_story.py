"""One threshold story (issue 25): `inspect` shows the calibrated threshold and, when results carry
another, that one too with the reason in one line; the numbers are the ones results carry."""

from __future__ import annotations

import json
import subprocess
import sys

from edge_lstm import Engine, Reading, Result, encode, load_model
from edge_lstm.cli.inspect import describe
from edge_lstm.onnx_model import default_model_path


def test_inspect_says_which_threshold_results_carry_and_why() -> None:
    model = load_model(default_model_path())
    doc = describe(model)
    calibrated, carried = doc["calibration"]["threshold"], doc["threshold_in_results"]
    engine = Engine(model)
    (result,) = engine.process([Reading("pump-7", 1764230411.0, (40.0, 0.5, 10.0))])
    assert isinstance(result, Result)
    assert carried == result.threshold != calibrated  # the packaged model: scoring.extrapolate = risk
    published = json.loads(encode(result))["threshold"]

    text = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "inspect"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    lines = [line.strip() for line in text.splitlines()]
    (cal_line,) = [line for line in lines if line.startswith("calibration  threshold")]
    (carried_line,) = [line for line in lines if line.startswith("results carry threshold")]
    assert f"threshold {calibrated:g}" in cal_line and "the calibrated one" in cal_line
    assert carried_line.startswith(f"results carry threshold {published:g}:")
    assert "scoring.extrapolate = risk" in carried_line
