from __future__ import annotations

import json
import math
from typing import Any

import pytest

from edge_lstm import Result, encode

BASE: dict[str, Any] = dict(
    stream="pump-7",
    ts=1_700_000_000.25,
    score=1.5,
    anomaly=False,
    threshold=2.5,
    warming_up=False,
    model={"name": "m", "version": "1.0"},
    names=("temp", "vib"),
)


@pytest.mark.parametrize(
    "fields",
    [
        dict(prediction=[40.1, 0.3]),
        dict(output=[0.7, 2.0]),
        dict(prediction=[1e-300, -0.0], anomaly=True, warming_up=True, threshold=None),
        dict(prediction=[1.0, 2.0], stream='we"ird\\str\x01eam/ünï+#'),
        dict(names=('"q"', "ü"), output=[1.0, 2.0]),
        dict(prediction=[40.1, 0.3], forecast={"temp": [40.1, 40.2], "vib": [0.3, 0.4], "ts": [1.0, 2.0]}),
    ],
)
def test_encode_is_the_json_of_to_dict(fields: dict[str, Any]) -> None:
    """The same keys, order and values as json.dumps(to_dict()); numbers written "%.6g" (`2` for 2.0)."""
    r = Result(**{**BASE, **fields})
    payload = encode(r)
    assert json.loads(payload) == r.to_dict()
    assert list(json.loads(payload)) == list(r.to_dict())


def test_non_finite_numbers_become_null_not_invalid_json() -> None:
    r = Result(**{**BASE, "score": math.nan, "output": [math.inf, 1.0]})
    doc = json.loads(encode(r))  # strict parsers reject NaN/Infinity tokens
    assert doc["score"] is None and doc["output"] == {"temp": None, "vib": 1.0}


def test_a_forecast_with_non_finite_values_is_valid_json() -> None:
    r = Result(**{**BASE, "prediction": [1.0, math.nan], "forecast": {"temp": [1.0, 2.0], "vib": [math.nan, math.inf]}})
    payload = json.loads(encode(r))
    assert payload["forecast"] == {"temp": [1.0, 2.0], "vib": [None, None]}
    assert payload["prediction"] == {"temp": 1.0, "vib": None}
