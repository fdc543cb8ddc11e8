"""`quantize="int8"`: the LSTM really becomes DynamicQuantizeLSTM, parity vs float and speed are
reported, and what cannot be quantized (or is too inaccurate) is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_lstm import Engine, Reading, Result, load_model

torch = pytest.importorskip("torch", reason="needs torch (the export extra)")

from torch import nn  # noqa: E402

from edge_lstm_export import QuantizationError, export_torch  # noqa: E402

pytestmark = pytest.mark.export

FEATURES = ["a", "b", "c"]


class Net(nn.Module):
    def __init__(self, cls: type[nn.RNNBase] = nn.LSTM) -> None:
        super().__init__()
        self.rnn = cls(3, 16, num_layers=2, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.rnn(x)[0])


def test_int8_quantization(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = [np.cumsum(rng.normal(0, 0.2, (400, 3)), axis=0) + [20, 1, 5] for _ in range(2)]
    path = tmp_path / "q.onnx"
    report = export_torch(Net(), path, features=FEATURES, quantize="int8", calibrate=normal)
    q = report.quantization
    assert q is not None
    print(
        f"int8: max_abs_error {q.max_abs_error:.3g}, {q.float_step_us:.1f} us -> {q.int8_step_us:.1f} us "
        f"(speedup {q.speedup:.2f}), {q.float_bytes} -> {q.int8_bytes} bytes"
    )
    assert q.quantized_lstm_nodes == 2
    assert q.relative_to == "residual spread"  # bounded relative to the calibrated forecast error
    assert 0 < q.max_relative_error <= q.tolerance and len(q.per_output_error) == 3
    assert q.flag_agreement is not None and q.flag_agreement >= 0.999 and q.flag_readings > 700
    assert q.float_step_us_256 > 0 and q.int8_step_us_256 > 0
    assert q.float_step_us > 0 and q.int8_step_us > 0
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops
    # The served (quantized) model is the one calibrated, and the daemon runs it.
    model = load_model(path)
    assert model.meta.provenance["quantization"]["quantized_lstm_nodes"] == 2
    assert model.meta.calibration is not None
    results = Engine(model).process([Reading("s", 1_700_000_000.0 + t, tuple(normal[0][t])) for t in range(20)])
    assert all(isinstance(r, Result) for r in results)


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
