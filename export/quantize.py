"""`--quantize int8`: onnxruntime dynamic quantization, verified rather than trusted.

`quantize_dynamic` silently leaves an LSTM in float when its W/R are not initializers, so we check that
every LSTM node really became `DynamicQuantizeLSTM`, measure the error against the float model over the
parity sequences and the per-step latency of both (same run, same machine), and refuse beyond a bound.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from .errors import QuantizationError
from .onnx_export import op_types
from .parity import run_steps, step_session

# Scaled (≈ standard-deviation) units of the output: int8 weights typically cost 1e-3..1e-2.
DEFAULT_QUANT_TOLERANCE = 0.05
_TIMING_STEPS = 300


@dataclass(frozen=True)
class QuantReport:
    max_abs_error: float  # vs the float model, output units (scaled for forecasts)
    tolerance: float
    quantized_lstm_nodes: int
    float_step_us: float  # median per-step latency, batch 1, one thread
    int8_step_us: float
    speedup: float  # float_step_us / int8_step_us (> 1: int8 is faster)
    float_bytes: int
    int8_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_int8(
    model: onnx.ModelProto, seqs: np.ndarray, *, tolerance: float = DEFAULT_QUANT_TOLERANCE
) -> tuple[onnx.ModelProto, QuantReport]:
    n_lstm = op_types(model).count("LSTM")
    if n_lstm == 0:
        raise QuantizationError(
            "int8 quantization needs an LSTM: onnxruntime has no dynamically quantized GRU/RNN operator"
        )
    with tempfile.TemporaryDirectory(prefix="edge-lstm-q-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" hint meant for CNNs
        try:
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul", "Gemm"]
            )
        finally:
            root.setLevel(level)
        qmodel = onnx.load(str(dst))
    ops = op_types(qmodel)
    if ops.count("LSTM") or ops.count("DynamicQuantizeLSTM") != n_lstm:
        raise QuantizationError(
            f"quantization left {ops.count('LSTM')} of {n_lstm} LSTM node(s) in float (W/R are probably "
            "computed in the graph instead of being initializers); refusing to ship a model that is not "
            "what --quantize int8 promises"
        )
    float_bytes, int8_bytes = model.SerializeToString(), qmodel.SerializeToString()
    fsess, qsess = step_session(float_bytes), step_session(int8_bytes)
    seqs = np.ascontiguousarray(seqs, np.float32)
    err = float(np.max(np.abs(run_steps(fsess, seqs).astype(np.float64) - run_steps(qsess, seqs))))
    f_us, q_us = _step_latency(fsess, qsess, seqs[0])
    report = QuantReport(err, tolerance, n_lstm, f_us, q_us, f_us / q_us, len(float_bytes), len(int8_bytes))
    if not err <= tolerance:
        raise QuantizationError(
            f"int8 model differs from the float model by {err:.3g} (bound {tolerance:g}); not written"
        )
    return qmodel, report


def _step_latency(fsess: Any, qsess: Any, seq: np.ndarray) -> tuple[float, float]:
    """Median per-step time at batch 1, alternating the two models so both see the same machine load."""
    rounds: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(3):
        for k, sess in enumerate((fsess, qsess)):
            ins = sess.get_inputs()
            states = [np.zeros((1, *i.shape[1:]), np.float32) for i in ins[1:]]
            start = time.perf_counter()
            for t in range(min(_TIMING_STEPS, len(seq))):
                _, *states = sess.run(
                    None, {ins[0].name: seq[t : t + 1], **{i.name: s for i, s in zip(ins[1:], states)}}
                )
            rounds[k].append((time.perf_counter() - start) / min(_TIMING_STEPS, len(seq)) * 1e6)
    return float(np.median(rounds[0])), float(np.median(rounds[1]))
