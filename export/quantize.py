"""`--quantize int8`: onnxruntime dynamic quantization, verified rather than trusted.

`quantize_dynamic` silently leaves an LSTM in float when its W/R are not initializers, so we check that
every LSTM node really became `DynamicQuantizeLSTM`. Then, against the float model:

- the error per output over the parity sequences, *relative to that output's natural scale*: its
  calibrated residual spread (what a normal forecast error is) when there is calibration data, else its
  scaled unit (one standard deviation of the feature). `tolerance` bounds that ratio: an int8 model
  whose error is a small fraction of the normal forecast error changes no score that matters;
- whether any reading's `anomaly` flag changes on the calibration data (api.py: both models calibrated,
  run through the daemon's Engine): below `MIN_FLAG_AGREEMENT` the int8 model is refused;
- the per-step latency at batch 1 and at batch 256: the best of `_REPEATS` rounds alternating the two
  models. api.py keeps the int8 model only when `is_faster` (batch 256, by `MIN_INT8_SPEEDUP`), unless
  told to keep it anyway. The timing function is a parameter (`timer`) so tests can force either case.

Measured (docs/export.md, "int8"): per-channel weights made no difference on these small LSTMs, and
static (QDQ) quantization cannot quantize the LSTM operator in onnxruntime (only the head's MatMul).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from .errors import QuantizationError
from .onnx_export import op_types
from .parity import run_steps, step_session

# The int8 error may be this fraction of each output's natural scale (see the module docstring).
DEFAULT_QUANT_TOLERANCE = 0.1
MIN_FLAG_AGREEMENT = 0.999  # readings of the calibration data whose anomaly flag int8 leaves unchanged
# int8 is kept only when its per-step time at batch 256 (the daemon's micro-batched case) is at least
# this much faster than float's: smaller differences are within the timing noise of a busy machine (up
# to ±7 % measured on a loaded 2-core VM) and do not pay for int8's rounding.
MIN_INT8_SPEEDUP = 1.05
_TIMING_STEPS = 300
_BIG_BATCH = 256
_BIG_BATCH_STEPS = 100
_REPEATS = 7  # alternated rounds; the best (fastest) of each model is kept: noise only ever adds time

# (float session, int8 session, inputs [T, batch, F]) -> (float µs per step, int8 µs per step)
Timer = Callable[[Any, Any, np.ndarray], tuple[float, float]]


@dataclass(frozen=True)
class QuantReport:
    max_abs_error: float  # vs the float model, output units (scaled for forecasts)
    max_relative_error: float  # the largest per-output error / that output's natural scale
    relative_to: str  # "residual spread" (calibrated) or "scaled unit"
    per_output_error: list[float]  # max abs error per output
    tolerance: float  # bound of max_relative_error
    quantized_lstm_nodes: int
    float_step_us: float  # per-step latency, batch 1, one thread (best of _REPEATS)
    int8_step_us: float
    speedup: float  # float_step_us / int8_step_us (> 1: int8 is faster)
    float_step_us_256: float  # per step of a batch of 256 streams
    int8_step_us_256: float
    speedup_256: float
    float_bytes: int
    int8_bytes: int
    flag_agreement: float | None = None  # filled in by api.py when there is calibration data
    flag_readings: int | None = None
    kept: bool = True  # False: int8 was not faster (is_faster) and the float model was written instead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_int8(
    model: onnx.ModelProto,
    seqs: np.ndarray,
    *,
    tolerance: float = DEFAULT_QUANT_TOLERANCE,
    output_scale: np.ndarray | None = None,
    timer: Timer | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """`output_scale`: each output column's natural scale in the model's output units (the calibrated
    residual spread, scaled); None: 1 (one standard deviation of the feature, for a scaled forecast).
    `timer`: measures both models (default `step_latency`)."""
    if not tolerance > 0:
        raise QuantizationError(f"the int8 tolerance must be > 0, got {tolerance}")
    n_lstm = op_types(model).count("LSTM")
    if n_lstm == 0:
        raise QuantizationError(
            "int8 quantization needs an LSTM: onnxruntime has no dynamically quantized GRU/RNN operator"
        )
    with tempfile.TemporaryDirectory(prefix="edge-lstm-q-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(_direct_weights(model), str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" hint meant for CNNs
        try:
            # reduce_range: 7-bit weights. On x86-64 CPUs without VNNI (AVX2 only) onnxruntime's u8 × s8
            # kernels sum pairs of products into int16 and saturate with full-range weights: the same
            # model measured 0.386 of a residual spread off on an AVX2-only AMD EPYC, within the
            # tolerance on a VNNI machine (onnxruntime's quantization docs, "reduce_range"). The model
            # must be right on whatever CPU runs it, so always.
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
                reduce_range=True,
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
    diff = np.abs(run_steps(fsess, seqs).astype(np.float64) - run_steps(qsess, seqs))
    per_output = diff.reshape(-1, diff.shape[-1]).max(axis=0)
    scale = np.ones_like(per_output) if output_scale is None else np.asarray(output_scale, np.float64)
    relative = per_output / scale
    worst = int(np.argmax(relative))
    timer = timer or step_latency
    f_us, q_us = timer(fsess, qsess, seqs[0][:, None, :])
    big = np.repeat(seqs[:1], _BIG_BATCH, axis=0)[:, :_BIG_BATCH_STEPS]  # [256, T, F]
    f_big, q_big = timer(fsess, qsess, np.swapaxes(big, 0, 1))
    report = QuantReport(
        float(per_output.max()),
        float(relative.max()),
        "scaled unit" if output_scale is None else "residual spread",
        per_output.tolist(),
        tolerance,
        n_lstm,
        f_us,
        q_us,
        f_us / q_us,
        f_big,
        q_big,
        f_big / q_big,
        len(float_bytes),
        len(int8_bytes),
    )
    if not report.max_relative_error <= tolerance:
        raise QuantizationError(
            f"int8 model differs from the float model by {report.max_relative_error:.3g} of output {worst}'s "
            f"{report.relative_to} (bound {tolerance:g}; abs error {per_output[worst]:.3g}); not written. "
            "Export in float (no --quantize), or accept more with --quant-tolerance"
        )
    return qmodel, report


def is_faster(report: QuantReport) -> bool:
    """The int8 model is worth keeping for speed: faster at batch 256 by at least `MIN_INT8_SPEEDUP`."""
    return report.speedup_256 >= MIN_INT8_SPEEDUP


def step_latency(fsess: Any, qsess: Any, seq: np.ndarray) -> tuple[float, float]:
    """Best time per step of `seq` `[T, batch, F]` over `_REPEATS` rounds, alternating the two models so
    both see the same machine load; the best, because load and interruptions only ever add time."""
    rounds: dict[int, list[float]] = {0: [], 1: []}
    steps = min(_TIMING_STEPS, len(seq))
    for _ in range(_REPEATS):
        for k, sess in enumerate((fsess, qsess)):
            ins = sess.get_inputs()
            states = [np.zeros((seq.shape[1], *i.shape[1:]), np.float32) for i in ins[1:]]
            start = time.perf_counter()
            for t in range(steps):
                _, *states = sess.run(None, {ins[0].name: seq[t], **{i.name: s for i, s in zip(ins[1:], states)}})
            rounds[k].append((time.perf_counter() - start) / steps * 1e6)
    return min(rounds[0]), min(rounds[1])


def _direct_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which every LSTM reads its own W and R initializers. torch exports a module called
    several times (a seq2seq decoder's rollout) with one initializer and an `Identity` per further use;
    `quantize_dynamic` leaves an LSTM whose W/R is an Identity's output in float, and transposes a W/R
    shared by two LSTMs once per node (the second one gets it transposed twice: wrong forecasts)."""
    inits = {i.name: i for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs
    }
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = [n for n in copy.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    used: set[str] = set()
    for n in nodes:
        for k, name in enumerate(n.input):
            n.input[k] = name = alias.get(name, name)
            if n.op_type == "LSTM" and k in (1, 2):
                if name in used:  # a second LSTM on these weights: its own copy
                    dup = onnx.TensorProto()
                    dup.CopyFrom(inits[name])
                    dup.name = n.input[k] = f"{name}.{n.name or len(used)}"
                    copy.graph.initializer.append(dup)
                used.add(n.input[k])
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def flag_agreement(
    float_model: onnx.ModelProto,
    float_meta: dict[str, Any],
    int8_model: onnx.ModelProto,
    int8_meta: dict[str, Any],
    streams: Sequence[np.ndarray],
    score_from: Sequence[int] | None,
) -> tuple[float, int]:
    """The share of calibration readings whose `anomaly` flag is the same from both models, each with its
    own calibration, run through the daemon's Engine (both channels, as served). Returns (share, readings)."""
    from .calibrate import run_engine
    from .onnx_export import save, set_metadata

    interval = float(float_meta.get("sample_interval_s") or 1.0)
    start = list(score_from) if score_from is not None else [0] * len(streams)
    flags = []
    with tempfile.TemporaryDirectory(prefix="edge-lstm-q-") as tmp:
        for k, (m, meta) in enumerate(((float_model, float_meta), (int8_model, int8_meta))):
            copy = onnx.ModelProto()
            copy.CopyFrom(m)
            set_metadata(copy, meta)
            path = save(copy, Path(tmp) / f"m{k}.onnx")
            runs = run_engine(path, streams, interval)
            flags.append([r.anomaly for results, first in zip(runs, start) for r in results[first:]])
    same = sum(a == b for a, b in zip(*flags))
    n = len(flags[0])
    return (same / n if n else 1.0), n
