"""Published numbers carry six significant digits (README, "MQTT topics and payloads"); times are whole.
Issue 25: results printed 15-17 digits (`2.851180119414455`), noise on the wire and in dashboards."""

from __future__ import annotations

import json
import re

import numpy as np

from edge_lstm import Engine, Reading, Result, encode, load_model
from edge_lstm.demo.simulate import normal_series
from edge_lstm.onnx_model import default_model_path
from edge_lstm.result import SIGNIFICANT_DIGITS, AlarmEvent, encode_alarm

T0 = 1764230411.0


def packaged_results(n: int = 400) -> list[Result]:
    """Results of the packaged model on a simulated machine, past its baseline (every field present)."""
    engine = Engine(load_model(default_model_path()))
    values = normal_series(n, seed=1)
    out: list[Result] = []
    for t in range(n):
        (r,) = engine.process([Reading("pump-7", T0 + t + 0.123456, tuple(float(v) for v in values[t]))])
        assert isinstance(r, Result)
        out.append(r)
    return out


def significant(token: str) -> int:
    mantissa = token.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def test_numbers_have_six_significant_digits_and_times_are_whole() -> None:
    results = packaged_results()
    assert SIGNIFICANT_DIGITS == 6
    for r in results[-50:]:
        payload = encode(r).decode()
        doc = json.loads(payload)
        assert doc["ts"] == r.ts  # 1764230811.123456: a time keeps every digit
        assert doc["score"] == float(f"{r.score:.6g}") and doc["threshold"] == float(f"{r.threshold:.6g}")
        numbers = re.findall(r'"([a-z_]+)":(-?[0-9][0-9.e+-]*)', payload)
        assert len(numbers) >= 10
        for key, token in numbers:
            if key != "ts":
                assert significant(token) <= SIGNIFICANT_DIGITS, (key, token)


def test_payload_size() -> None:
    """The packaged model's full result (after the baseline: deviation, bias, likelihood all present)
    fits in 400 bytes (395 with this microsecond ts and `surprise`); with 17-digit floats it took up to 474
    with a whole ts and no `surprise` (measured when rounding was added: mean 419 -> 354 bytes)."""
    sizes = [len(encode(r)) for r in packaged_results()[-100:]]
    assert max(sizes) <= 400, max(sizes)
    assert np.mean(sizes) < 400
    numbers = _numbers(packaged_results()[-1])
    assert len(numbers) >= 10 and all(float(f"{v:.6g}") == v for v in numbers)  # `surprise` among them


def _numbers(r: Result) -> list[float]:
    """Every number of the result's payload but its time (times are published whole)."""
    doc = json.loads(encode(r))
    flat = [v for k, v in doc.items() if k != "ts" and isinstance(v, float)]
    return flat + [v for sub in doc.values() if isinstance(sub, dict) for v in sub.values() if isinstance(v, float)]


def test_alarm_peak_is_rounded_and_since_is_whole() -> None:
    e = AlarmEvent("pump-7", "raised", T0 + 0.123456, 114.51234567, 3)
    doc = json.loads(encode_alarm(e, {"name": "m", "version": "1"}))
    assert doc["peak_score"] == 114.512 and doc["since"] == T0 + 0.123456


def test_forecast_values_are_rounded_and_its_times_whole() -> None:
    r = Result("s", T0, 1.0, False, 2.0, False, {"name": "m", "version": "1"}, prediction=[1.0], names=("a",),
               forecast={"a": [1.23456789, 2.0], "ts": [T0 + 1.000001, T0 + 2.000001]})  # fmt: skip
    doc = json.loads(encode(r))
    assert doc["forecast"] == {"a": [1.23457, 2.0], "ts": [T0 + 1.000001, T0 + 2.000001]}
