"""`fit`/export summaries name the thresholds with `inspect`'s words and numbers (issue 25)."""

from __future__ import annotations

from edge_lstm import load_model
from edge_lstm.cli.inspect import describe
from edge_lstm.onnx_model import default_model_path
from edge_lstm_export.api import _threshold_in_results


def test_the_summary_line_is_inspects() -> None:
    doc = describe(load_model(default_model_path()))
    calibrated, carried = doc["calibration"]["threshold"], doc["threshold_in_results"]
    (line,) = _threshold_in_results(default_model_path(), calibrated)
    assert line == (
        f"calibration: results carry threshold {carried:g}: the calibrated one carried to 1 - scoring.risk "
        "(scoring.extrapolate = risk, docs/scoring.md)"
    )
    assert _threshold_in_results(default_model_path(), carried) == []  # the same number: nothing to explain
