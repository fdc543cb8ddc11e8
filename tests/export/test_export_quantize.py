"""`quantize="int8"`: the LSTM really becomes DynamicQuantizeLSTM, parity vs float and speed are
reported, what cannot be quantized (or is too inaccurate) is refused, and an int8 model that is not
faster is replaced by the float one unless kept on purpose. Speed decisions use an injected timer:
real timings are only checked for being reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edge_lstm import Engine, Reading, Result, load_model

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch
from torch import nn

from edge_lstm_export import ExportError, QuantizationError, export_torch
from edge_lstm_export.fit import Seq2SeqForecaster
from edge_lstm_export.quantize import MIN_INT8_SPEEDUP

pytestmark = pytest.mark.export

FEATURES = ["a", "b", "c"]


def _timer(float_us: float, int8_us: float) -> Any:
    """A fake speed measurement: (float, int8) µs per step, scaled by the batch so both sizes differ."""
    return lambda fsess, qsess, seq: (float_us * seq.shape[1], int8_us * seq.shape[1])


FASTER, SLOWER = _timer(30.0, 20.0), _timer(20.0, 21.0)


def _random_walks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.normal(0, 0.2, (400, 3)), axis=0) + [20, 1, 5] for _ in range(2)]


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


class Net(nn.Module):
    def __init__(self, cls: type[nn.LSTM] | type[nn.GRU] = nn.LSTM) -> None:
        super().__init__()
        self.rnn = cls(3, 16, num_layers=2, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = x + self.fc(self.rnn(x)[0])
        return result


@pytest.mark.slow  # ~37 s on a shared 2-core machine: `./dev quick` skips it
def test_int8_quantization(tmp_path: Path) -> None:
    torch.manual_seed(0)
    normal = _random_walks()
    path = tmp_path / "q.onnx"
    report = export_torch(Net(), path, features=FEATURES, quantize="int8", calibrate=normal, quant_timer=FASTER)
    q = report.quantization
    assert q is not None
    assert q.kept and q.speedup_256 == 1.5 and "int8: kept: faster on this machine" in report.summary()
    assert q.quantized_lstm_nodes == 2
    assert q.relative_to == "residual spread"  # bounded relative to the calibrated forecast error
    assert 0 < q.max_relative_error <= q.tolerance and len(q.per_output_error) == 3
    assert q.flag_agreement is not None and q.flag_agreement >= 0.999 and q.flag_readings > 700
    ops = _ops(path)
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    # The served (quantized) model is the one calibrated, and the daemon runs it.
    model = load_model(path)
    assert model.meta.provenance["quantization"]["quantized_lstm_nodes"] == 2
    assert model.meta.calibration is not None
    results = Engine(model).process([Reading("s", 1_700_000_000.0 + t, tuple(normal[0][t])) for t in range(20)])
    assert all(isinstance(r, Result) for r in results)


def test_int8_not_faster_writes_the_float_model_and_says_why(tmp_path: Path) -> None:
    torch.manual_seed(0)
    normal = _random_walks()
    path = tmp_path / "q.onnx"
    report = export_torch(Net(), path, features=FEATURES, quantize="int8", calibrate=normal, quant_timer=SLOWER)
    q = report.quantization
    assert q is not None and not q.kept
    ops = _ops(path)
    assert ops.count("LSTM") == 2 and "DynamicQuantizeLSTM" not in ops
    # The accuracy checks still ran (and are reported); the served model carries the float calibration.
    assert q.flag_agreement is not None and q.flag_agreement >= 0.999
    assert report.calibration is not None
    model = load_model(path)
    assert model.meta.calibration is not None and model.meta.calibration.threshold == report.calibration.threshold
    assert model.meta.provenance["quantization"]["kept"] is False
    verdict = [line for line in report.summary().splitlines() if "not kept" in line]
    assert verdict == [
        "int8: not kept, wrote the float model: int8 is not faster on this machine at batch 256 (float 5120 us, "
        "int8 5376 us per step: 0.95x, needs >= 1.05x); to write int8 anyway (smaller file, or a target CPU where "
        "int8 is faster): --keep-int8-if-slower"
    ]
    assert report.summary().splitlines()[0].endswith("(float: int8 was not faster, see below)")


def test_keep_int8_if_slower_keeps_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "q.onnx"
    report = export_torch(Net(), path, features=FEATURES, quantize="int8", keep_int8_if_slower=True, quant_timer=SLOWER)
    q = report.quantization
    assert q is not None and q.kept and q.flag_agreement is None  # no calibration data: no flag check
    assert _ops(path).count("DynamicQuantizeLSTM") == 2
    assert "int8: kept although not faster on this machine" in report.summary()
    with pytest.raises(ExportError, match="only applies with --quantize int8"):
        export_torch(Net(), tmp_path / "f.onnx", features=FEATURES, keep_int8_if_slower=True)


def test_a_small_margin_is_noise_not_speed(tmp_path: Path) -> None:
    report = export_torch(
        Net(), tmp_path / "q.onnx", features=FEATURES, quantize="int8", quant_timer=_timer(20.0, 19.8)
    )
    assert report.quantization is not None and not report.quantization.kept  # 1 % faster is noise, not speed


def test_real_timings_are_reported(tmp_path: Path) -> None:
    """With the real measurement, whatever it decides, the report carries both numbers at both sizes."""
    report = export_torch(Net(), tmp_path / "q.onnx", features=FEATURES, quantize="int8")
    q = report.quantization
    assert q is not None
    assert q.float_step_us > 0 and q.int8_step_us > 0 and q.float_step_us_256 > 0 and q.int8_step_us_256 > 0
    verdict = report.summary().splitlines()[-1]
    assert f"float {q.float_step_us_256:.0f} us, int8 {q.int8_step_us_256:.0f} us" in verdict
    assert f"{q.float_step_us:.1f} -> {q.int8_step_us:.1f} us at batch 1" in report.summary()
    assert q.kept == (q.speedup_256 >= MIN_INT8_SPEEDUP)
    assert ("DynamicQuantizeLSTM" in _ops(tmp_path / "q.onnx")) == q.kept


def test_gru_cannot_be_quantized(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="no dynamically quantized GRU"):
        export_torch(Net(nn.GRU), tmp_path / "q.onnx", features=FEATURES, quantize="int8")
    assert not (tmp_path / "q.onnx").exists()


def test_error_beyond_bound_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        QuantizationError, match=r"differs from the float model by .* \(bound 1e-09;.*--quant-tolerance"
    ):
        export_torch(Net(), tmp_path / "q.onnx", features=FEATURES, quantize="int8", quant_tolerance=1e-9)
    assert not (tmp_path / "q.onnx").exists()


def test_flag_agreement_counts_changed_flags(tmp_path: Path) -> None:
    """The agreement report compares the served flags of two differently calibrated models."""
    from edge_lstm_export.onnx_export import export_step
    from edge_lstm_export.quantize import flag_agreement
    from edge_lstm_export.stateful import make_step

    rng = np.random.default_rng(1)
    normal = [rng.normal(0, 1, (200, 3))]
    report = export_torch(Net(), tmp_path / "f.onnx", features=FEATURES, calibrate=normal)
    float_model = export_step(make_step(Net(), 3), 3)
    meta = report.meta
    same, n = flag_agreement(float_model, meta, float_model, meta, normal, None)
    assert same == 1.0 and n == 200
    strict = {**meta, "calibration": {**meta["calibration"], "threshold": 1e-6}}  # flags every scored reading
    changed, _ = flag_agreement(float_model, meta, float_model, strict, normal, None)
    assert changed < 0.2


@pytest.mark.slow  # ~39 s on a shared 2-core machine: `./dev quick` skips it
def test_int8_of_a_seq2seq_model_quantizes_every_decoder_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    normal = _random_walks()
    path = tmp_path / "s.onnx"
    report = export_torch(
        # fit's encoder-decoder (docs/export.md's protocol): the decoder LSTM runs K times, sharing weights.
        Seq2SeqForecaster(3, hidden=16, layers=2),
        path,
        features=FEATURES,
        horizon=4,
        quantize="int8",
        calibrate=normal,
        quant_timer=FASTER,
    )
    q = report.quantization
    assert q is not None and q.kept
    assert q.quantized_lstm_nodes == 2 + 4 * 2  # the encoder's layers, and the decoder's at each of 4 steps
    assert len(q.per_output_error) == 4 * 3 and q.max_relative_error <= q.tolerance  # bounded at every step
    assert q.flag_agreement is not None and q.flag_agreement >= 0.999
    ops = _ops(path)
    assert ops.count("DynamicQuantizeLSTM") == 10 and "LSTM" not in ops
    model = load_model(path)
    results = Engine(model).process([Reading("s", 1_700_000_000.0 + t, tuple(normal[0][t])) for t in range(20)])
    assert all(isinstance(r, Result) and r.forecast is not None for r in results[-5:])
