"""`export_torch`: a PyTorch model → a verified (parity), optionally quantized and calibrated step model.

Nothing is written unless every check passes: the file at `path` is either a model `edge-lstm run`
serves unchanged, or untouched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import onnx
import torch
from torch import nn

from edge_lstm.contract import HORIZON_SCHEMA_VERSION
from edge_lstm.onnx_model import load_model

from . import __version__
from .calibrate import DEFAULT_QUANTILE, CalibrationReport
from .calibrate import calibrate as run_calibration  # the name `calibrate` is export_torch's argument
from .csvdata import read_csv
from .errors import DataError, ExportError, QuantizationError
from .onnx_export import export_step, io_section, save, set_metadata
from .parity import DEFAULT_TOLERANCE, ParityReport, check_parity, generate_sequences, merge
from .quantize import (
    DEFAULT_QUANT_TOLERANCE,
    MIN_FLAG_AGREEMENT,
    MIN_INT8_SPEEDUP,
    QuantReport,
    Timer,
    flag_agreement,
    is_faster,
    quantize_int8,
)
from .seq2seq import Seq2SeqStep, check_seq2seq_parity, make_seq2seq_step
from .stateful import StepWrapper, make_step

TOOL_VERSION = __version__  # the package version, from its metadata (pyproject.toml)
_PARITY_SEQUENCES, _PARITY_STEPS = 4, 300

Data = str | Path | np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_error: float  # parity of the float step model vs the source model
    parity: ParityReport
    meta: dict[str, Any]  # the metadata document written
    calibration: CalibrationReport | None = None
    quantization: QuantReport | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def summary(self) -> str:
        p = self.parity
        q = self.quantization
        lines = [
            f"wrote {self.path}" + (" (float: int8 was not faster, see below)" if q and not q.kept else ""),
            f"parity: max_abs_error {p.max_abs_error:.3g} (tolerance {p.tolerance:g}; {p.sequences} "
            f"sequences x {p.steps} steps, {p.mode}, {p.data} data)",
        ]
        if q:
            agree = (
                f"; anomaly flags unchanged on {100 * q.flag_agreement:.2f} % of {q.flag_readings} calibration readings"
                if q.flag_agreement is not None
                else ""
            )
            lines.append(
                f"int8: error vs float {q.max_relative_error:.3g} of the {q.relative_to} (bound {q.tolerance:g}; "
                f"max abs {q.max_abs_error:.3g}){agree}"
            )
            lines.append(
                f"int8: step {q.float_step_us:.1f} -> {q.int8_step_us:.1f} us at batch 1 (speedup {q.speedup:.2f}x), "
                f"{q.float_step_us_256:.0f} -> {q.int8_step_us_256:.0f} us at batch 256 ({q.speedup_256:.2f}x), "
                f"{q.float_bytes} -> {q.int8_bytes} bytes"
            )
            lines.append(_speed_verdict(q))
        if self.calibration:
            c = self.calibration
            at = f"q{c.quantile} of {c.samples} normal scores"
            lines.append(f"calibration: threshold {c.threshold:g} = {at} (the calibrated one)")
            lines += _threshold_in_results(self.path, c.threshold)
        return "\n".join(lines)


def _threshold_in_results(path: Path, calibrated: float) -> list[str]:
    """The line `edge-lstm inspect` shows when results carry another threshold (the same words)."""
    from edge_lstm.cli.inspect import threshold_in_results

    carried = threshold_in_results(load_model(path))
    if carried is None or f"{carried:g}" == f"{calibrated:g}":
        return []
    return [
        f"calibration: results carry threshold {carried:g}: the calibrated one carried to 1 - scoring.risk "
        "(scoring.extrapolate = risk, docs/scoring.md)"
    ]


def export_torch(
    model: nn.Module,
    path: str | Path,
    *,
    features: Sequence[str],
    output: Literal["forecast", "score"] = "forecast",
    output_names: Sequence[str] | None = None,
    scaling: Mapping[str, Sequence[float]] | None = None,
    calibrate: Data | None = None,
    calibrate_from: Sequence[int] | None = None,
    sample_interval_s: float | None = None,
    warmup_steps: int = 10,
    name: str = "model",
    version: str = "0.1.0",
    tolerance: float = DEFAULT_TOLERANCE,
    quantize: Literal["int8"] | None = None,
    quant_tolerance: float = DEFAULT_QUANT_TOLERANCE,
    quantile: float = DEFAULT_QUANTILE,
    batch_first: bool | None = None,
    parity_data: Data | None = None,
    provenance: Mapping[str, Any] | None = None,
    horizon: int | None = None,
    progress: TextIO | None = None,
    keep_int8_if_slower: bool = False,
    quant_timer: Timer | None = None,
) -> ExportReport:
    """Export `model` (its `forward(x)` runs whole sequences from zero state) as a step model at `path`.

    `scaling` ({"offset": [...], "scale": [...]}) is what the model expects inputs divided by; when
    omitted it is learned from the calibration data (mean/std), or identity without data.
    `calibrate`/`parity_data`: an array `[steps, F]`, a list of them (one per stream), or a CSV path,
    in feature units; `calibrate_from[k]`: the first row of calibration stream k that counts (the rows
    before only warm the model's state: `fit` calibrates on each series' held-out tail this way).
    `batch_first` is the layout of the forward's input (default: the first RNN's).
    `horizon`: K steps ahead for an encoder-decoder model (`encoder` + `decode(last, state, K)`,
    export/seq2seq.py): the step model outputs the K-step forecast `[batch, K * outputs]`.
    `quantize="int8"` writes the int8 model only when it is faster than float at batch 256 (by
    `MIN_INT8_SPEEDUP`), else the float model with `report.quantization.kept` False;
    `keep_int8_if_slower` keeps it anyway. `quant_timer` replaces the speed measurement (tests).
    """
    features = list(features)
    if not features or len(set(features)) != len(features):
        raise ExportError(f"features must be unique, non-empty names, got {features}")
    if quantize not in (None, "int8"):
        raise ExportError(f"quantize must be None or 'int8', got {quantize!r}")
    if keep_int8_if_slower and quantize is None:
        raise ExportError("--keep-int8-if-slower only applies with --quantize int8")
    n = len(features)
    cal_streams = _streams(calibrate, features, "calibrate") if calibrate is not None else None
    offset, scale = _scaling(scaling, cal_streams, n)

    if horizon is not None:
        if output != "forecast":
            raise ExportError("horizon is for forecast models (output='forecast')")
    wrapper: StepWrapper | Seq2SeqStep = (
        make_step(model, n, batch_first=batch_first) if horizon is None else make_seq2seq_step(model, n, horizon)
    )
    steps_ahead = horizon or 1
    with torch.no_grad():
        n_out = int(wrapper(torch.zeros(2, n), *wrapper.zero_states(2))[0].shape[1]) // steps_ahead
    names = _output_names(output, output_names, features, n_out)

    # Parity runs in the model's own (scaled) input space, on real data when there is some.
    # Generated sequences always (hundreds of steps, whatever the data's length), plus windows of the
    # given data: real operating regimes are where the parity matters most.
    given = _streams(parity_data, features, "parity_data") if parity_data is not None else cal_streams
    seqs = generate_sequences(n, sequences=_PARITY_SEQUENCES, steps=_PARITY_STEPS)
    float_model = export_step(wrapper, n)
    model_bytes = float_model.SerializeToString()
    parity = _parity(wrapper, model_bytes, seqs, tolerance=tolerance, data="generated")
    real = _windows(given, offset, scale) if given else None
    if real is not None:
        parity = merge(parity, _parity(wrapper, model_bytes, real, tolerance=tolerance, data="given"))
        seqs = real  # quantization is judged on real data when there is some

    meta: dict[str, Any] = {
        "schema_version": HORIZON_SCHEMA_VERSION if steps_ahead > 1 else 1,
        "name": name,
        "version": version,
        "features": features,
        "scaling": {"offset": offset, "scale": scale},
        "output": {"kind": output, "names": names, **({"horizon": steps_ahead} if steps_ahead > 1 else {})},
        "io": io_section(wrapper),
        "warmup_steps": int(warmup_steps),
        "provenance": {
            "tool": f"edge-lstm-export {TOOL_VERSION}",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": type(model).__name__,
            "parity": parity.to_dict(),
            **dict(provenance or {}),
        },
    }
    if sample_interval_s is not None:
        meta["sample_interval_s"] = float(sample_interval_s)
    served, qreport, creport = float_model, None, None
    if quantize == "int8":
        served, meta, qreport, creport = _int8(
            float_model,
            meta,
            seqs,
            cal_streams,
            quant_tolerance,
            quantile=quantile,
            score_from=calibrate_from,
            keep_if_slower=keep_int8_if_slower,
            timer=quant_timer,
        )
        meta["provenance"]["quantization"] = qreport.to_dict()
    elif cal_streams is not None:
        meta, creport = run_calibration(
            served, meta, cal_streams, quantile=quantile, score_from=calibrate_from, progress=progress
        )
    set_metadata(served, meta)
    out = save(served, path)
    load_model(out)  # the daemon's own loader is the final judge of the contract
    return ExportReport(out, parity.max_abs_error, parity, meta, creport, qreport)


def _parity(
    wrapper: StepWrapper | Seq2SeqStep, model_bytes: bytes, seqs: np.ndarray, *, tolerance: float, data: str
) -> ParityReport:
    if isinstance(wrapper, Seq2SeqStep):
        return check_seq2seq_parity(wrapper, model_bytes, seqs, tolerance=tolerance, data=data)
    return check_parity(wrapper, model_bytes, seqs, tolerance=tolerance, data=data)


def _int8(
    float_model: onnx.ModelProto,
    meta: dict[str, Any],
    seqs: np.ndarray,
    cal_streams: list[np.ndarray] | None,
    tolerance: float,
    *,
    quantile: float,
    score_from: Sequence[int] | None,
    keep_if_slower: bool,
    timer: Timer | None,
) -> tuple[onnx.ModelProto, dict[str, Any], QuantReport, CalibrationReport | None]:
    """Quantize, bound the error relative to each output's calibrated residual spread, calibrate the
    int8 model, and check on the calibration data that no (or almost no) anomaly flag changes: an int8
    model failing those is refused. Then an accurate int8 model is served only if it is faster (or
    `keep_if_slower`); else the float model is, with the report saying why (`kept` False)."""
    float_meta, scale, fcreport = meta, None, None
    if cal_streams is not None:
        float_meta, fcreport = run_calibration(float_model, meta, cal_streams, quantile=quantile, score_from=score_from)
        cal = float_meta["calibration"]
        if meta["output"]["kind"] == "forecast":
            targets = [meta["features"].index(n) for n in meta["output"]["names"]]
            feature_scale = np.asarray(meta["scaling"]["scale"], np.float64)[targets]
            scale = np.asarray(cal["residual_std"], np.float64) / feature_scale  # in the model's output units
            scale = np.tile(scale, meta["output"].get("horizon", 1))  # a K-step forecast: K columns per output
    qmodel, qreport = quantize_int8(float_model, seqs, tolerance=tolerance, output_scale=scale, timer=timer)
    qmeta, creport = meta, None
    if cal_streams is not None:
        qmeta, creport = run_calibration(qmodel, meta, cal_streams, quantile=quantile, score_from=score_from)
        agree, readings = flag_agreement(float_model, float_meta, qmodel, qmeta, cal_streams, score_from)
        qreport = replace(qreport, flag_agreement=agree, flag_readings=readings)
        if agree < MIN_FLAG_AGREEMENT:
            raise QuantizationError(
                f"int8 changes the anomaly flag of {100 * (1 - agree):.2f} % of the {readings} calibration "
                f"readings (at most {100 * (1 - MIN_FLAG_AGREEMENT):.1f} % allowed); not written. "
                "Export in float (no --quantize)"
            )
    if is_faster(qreport) or keep_if_slower:
        return qmodel, qmeta, qreport, creport
    return float_model, float_meta, replace(qreport, kept=False), fcreport


def _speed_verdict(q: QuantReport) -> str:
    """The one line saying whether int8 was kept for speed, with the numbers that decided it."""
    measured = (
        f"at batch 256 (float {q.float_step_us_256:.0f} us, int8 {q.int8_step_us_256:.0f} us per step: "
        f"{q.speedup_256:.2f}x, needs >= {MIN_INT8_SPEEDUP:.2f}x)"
    )
    if not q.kept:
        return (
            f"int8: not kept, wrote the float model: int8 is not faster on this machine {measured}; to write "
            "int8 anyway (smaller file, or a target CPU where int8 is faster): --keep-int8-if-slower"
        )
    if not is_faster(q):
        return f"int8: kept although not faster on this machine {measured}, as --keep-int8-if-slower asks"
    return f"int8: kept: faster on this machine {measured}"


def _streams(data: Data, features: list[str], what: str) -> list[np.ndarray]:
    """Normalise the accepted data forms to a list of `[steps, F]` float arrays (feature units)."""
    if isinstance(data, (str, Path)):
        return read_csv(data, features).arrays
    arrays = (
        [np.asarray(data, np.float64)]
        if isinstance(data, np.ndarray) and data.ndim == 2
        else [np.asarray(a, np.float64) for a in data]
    )
    for k, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != len(features):
            raise DataError(
                f"{what}[{k}] has shape {list(a.shape)}; expected [steps, {len(features)}] for features {features}"
            )
        if not np.isfinite(a).all():
            raise DataError(f"{what}[{k}] contains NaN or infinite values")
    return arrays


def _scaling(
    scaling: Mapping[str, Sequence[float]] | None, streams: list[np.ndarray] | None, n: int
) -> tuple[list[float], list[float]]:
    if scaling is not None:
        offset, scale = list(map(float, scaling["offset"])), list(map(float, scaling["scale"]))
        if len(offset) != n or len(scale) != n:
            raise ExportError(f"scaling needs {n} offsets and scales, got {len(offset)} and {len(scale)}")
        return offset, scale
    if streams:
        allv = np.concatenate(streams)
        std = allv.std(axis=0)
        return allv.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist()
    return [0.0] * n, [1.0] * n


def _output_names(output: str, names: Sequence[str] | None, features: list[str], n_out: int) -> list[str]:
    if output not in ("forecast", "score"):
        raise ExportError(f"output must be 'forecast' or 'score', got {output!r}")
    if names is None:
        if output == "score":
            names = ["score"] if n_out == 1 else [f"score_{i}" for i in range(n_out)]
        elif n_out == len(features):
            names = features
        else:
            raise ExportError(
                f"the model has {n_out} outputs for {len(features)} features: a forecast model "
                "needs output_names saying which feature each output predicts"
            )
    names = list(names)
    if len(names) != n_out:
        raise ExportError(f"output_names has {len(names)} names but the model has {n_out} outputs")
    return names


def _windows(streams: list[np.ndarray], offset: list[float], scale: list[float]) -> np.ndarray | None:
    """Up to 4 scaled windows of equal length (≤ 300 steps) cut from the given streams."""
    length = min(_PARITY_STEPS, max(len(s) for s in streams))
    usable = [s for s in streams if len(s) >= length]
    wins = []
    for s in usable:
        for start in np.linspace(0, len(s) - length, max(1, _PARITY_SEQUENCES // len(usable))).astype(int):
            wins.append(s[start : start + length])
    if length < 20:
        return None  # too short to say anything about state: use generated sequences
    x = (np.asarray(wins[:_PARITY_SEQUENCES]) - np.asarray(offset)) / np.asarray(scale)
    out: np.ndarray = x.astype(np.float32)
    return out
