"""Time inputs (docs/model-format.md, `time_inputs`): the columns the daemon computes from a reading's
ts, and the contract that declares them. Models without them load unchanged (schema 1 and 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from support.models import make_step_model

from edge_lstm import ModelFormatError, load_model
from edge_lstm.contract import METADATA_KEY
from edge_lstm.timeinputs import time_columns

MONDAY = 1_396_828_800.0  # 2014-04-07 00:00:00 UTC


def test_columns_are_sin_and_cos_of_the_phase_in_each_period() -> None:
    ts = np.array([MONDAY, MONDAY + 6 * 3600, MONDAY + 12 * 3600, MONDAY + 3.5 * 86400])
    cols = time_columns(ts, ["day", "week"])
    assert cols.shape == (4, 4)
    day = 2 * np.pi * np.array([0.0, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(cols[:, 0], np.sin(day), atol=1e-9)
    np.testing.assert_allclose(cols[:, 1], np.cos(day), atol=1e-9)
    # The week's phase: epoch 0 was a Thursday, so a Monday at midnight is 4 days into the week.
    week = 2 * np.pi * (np.array([4.0, 4.25, 4.5, 7.5]) % 7) / 7
    np.testing.assert_allclose(cols[:, 2], np.sin(week), atol=1e-9)
    np.testing.assert_allclose(cols[:, 3], np.cos(week), atol=1e-9)
    assert time_columns(ts, []).shape == (4, 0)
    np.testing.assert_allclose(time_columns(ts + 86400, ["day"]), time_columns(ts, ["day"]), atol=1e-9)


def _edit(path: Path, **changes: object) -> Path:
    m = onnx.load(str(path))
    prop = next(p for p in m.metadata_props if p.key == METADATA_KEY)
    prop.value = json.dumps({**json.loads(prop.value), **changes})
    out = path.with_name("edited.onnx")
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"time_inputs": ["day"]}, "time_inputs needs schema_version 3"),
        ({"time_inputs": ["day", "day"], "schema_version": 3}, "time_inputs must be unique"),
        ({"time_inputs": ["month"], "schema_version": 3}, "'time_inputs.0'"),
        ({"time_inputs": ["day"], "schema_version": 3}, "lists 3 features and 1 time inputs (sin, cos)"),
    ],
)
def test_time_inputs_are_checked(tmp_path: Path, changes: dict[str, object], expected: str) -> None:
    with pytest.raises(ModelFormatError) as e:
        load_model(_edit(make_step_model(tmp_path / "m.onnx"), **changes))
    assert expected in str(e.value)


def test_models_without_time_inputs_are_unchanged(tmp_path: Path) -> None:
    for meta in (load_model(make_step_model(tmp_path / "m.onnx")).meta, load_model(None).meta):
        assert meta.time_inputs is None and meta.input_columns == len(meta.features)
        assert meta.schema_version in (1, 2) and "time_inputs" not in meta.to_json()
