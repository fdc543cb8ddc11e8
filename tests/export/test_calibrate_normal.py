"""What calibration records about normal operation beyond the forecast threshold: the known normal
states and the bias scale (docs/scoring.md), and that the daemon then accepts that normal data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from support.models import make_step_model
from support.outcomes import all_scored, present

from edge_lstm import Engine, Reading, load_model
from edge_lstm.contract import METADATA_KEY
from edge_lstm_export.calibrate import calibrate
from edge_lstm_export.onnx_export import save, set_metadata


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A machine whose later normal operation is not what its first five minutes showed: a slow level
    drift on one sensor and a stretch where the forecast is persistently off (a load change)."""
    x = rng.normal(0, 0.1, (n, 3)) + [1.0, 2.0, 3.0]
    x[:, 0] += np.linspace(0, 1.5, n)
    x[n // 2 : n // 2 + 200, 1] += 0.3
    return x


def test_calibration_records_states_and_bias_scale_and_its_own_data_replays_clean(tmp_path: Path) -> None:
    base = onnx.load(str(make_step_model(tmp_path / "m.onnx")))
    meta = json.loads(next(p.value for p in base.metadata_props if p.key == METADATA_KEY))
    rng = np.random.default_rng(0)
    series = _series(rng, 3000)
    calibrated, _ = calibrate(base, meta, [series], score_from=[1000])
    cal = calibrated["calibration"]
    assert len(cal["states"]) == 30  # 3000 rows in windows of 100
    assert cal["bias_scale"] > 1.0  # the load change drove `bias` above the streams' own thresholds
    set_metadata(base, calibrated)
    model = load_model(save(base, tmp_path / "calibrated.onnx"))
    out = all_scored(
        Engine(model).process([Reading("s", 1e9 + t, tuple(series[t].tolist())) for t in range(len(series))])
    )
    held_out = out[1000:]
    assert not any(o.bias is not None and o.bias > present(o.bias_threshold) for o in held_out)
    assert sum(o.deviation is not None and o.deviation > present(o.deviation_threshold) for o in held_out) < 10
    # and without them the same replay flags the drift and the load change
    plain = {**calibrated, "calibration": {k: v for k, v in cal.items() if k not in ("states", "bias_scale")}}
    set_metadata(base, plain)
    out = all_scored(
        Engine(load_model(save(base, tmp_path / "plain.onnx"))).process(
            [Reading("s", 1e9 + t, tuple(series[t].tolist())) for t in range(len(series))]
        )
    )
    assert sum(o.anomaly for o in out[1000:]) > 500


def test_no_bias_scale_when_the_calibration_data_stays_within_the_thresholds(tmp_path: Path) -> None:
    base = onnx.load(str(make_step_model(tmp_path / "m.onnx")))
    meta = json.loads(next(p.value for p in base.metadata_props if p.key == METADATA_KEY))
    short = np.random.default_rng(1).normal(0, 0.1, (400, 3)) + [1.0, 2.0, 3.0]
    calibrated, _ = calibrate(base, meta, [short], score_from=[320])
    assert "bias_scale" not in calibrated["calibration"]  # too short for any stream's bias to be ready
    assert len(calibrated["calibration"]["states"]) == 4
