"""Calibration: run the *exported* model over normal data through the daemon's own Engine.

No separate scoring code lives here: residuals come from the engine's predictions and scores from the
engine's Scorer, so a threshold means the same thing in calibration and in service (no train/serve
skew). Two passes, because the engine's scores depend on the residual statistics being calibrated:
  1. uncalibrated model → predictions → residual mean/std per output (feature units),
  2. model carrying those statistics → scores → threshold = quantile of the normal scores.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx

from edge_lstm.engine import Engine
from edge_lstm.onnx_model import load_model
from edge_lstm.reading import Reading
from edge_lstm.result import Result
from edge_lstm.scoring import ScoringConfig
from edge_lstm.scoring.channels.forecast import threshold_from_scores

from .errors import DataError


# onnx_export imports torch; calibration needs only its two onnx helpers, and `normal_states` (used by
# the core's unit tests) neither: imported when a model is written, so importing this module loads no torch.
def set_metadata(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    from .onnx_export import set_metadata as write_meta

    write_meta(model, meta)


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    from .onnx_export import save as write

    return write(model, path)


DEFAULT_QUANTILE = 0.999
MAX_STATES = 32  # known normal states kept (the daemon smooths a deviation against each, per stream)
STATE_WINDOW = 100  # readings per state at least: long enough for its mean and covariance
MIN_SAMPLES = 30  # fit holds out at least this many rows per stream (fit.MIN_HELD_OUT)
# The threshold when every normal score is 0: a score is a z-score against the residual spread, floored
# at 1e-6 of the feature's scale (below), so 1 flags any change of that size.
ZERO_SCORES_THRESHOLD = 1.0
_TS0 = 1_700_000_000.0  # any epoch after 2000: the engine only needs increasing timestamps


@dataclass(frozen=True)
class CalibrationReport:
    threshold: float
    quantile: float
    samples: int
    residual_mean: list[float] | None
    residual_std: list[float] | None
    score_mean: float
    score_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_engine(
    model_path: Path, streams: Sequence[np.ndarray], interval: float, progress: TextIO | None = None
) -> list[list[Result]]:
    """Every stream through one Engine, interleaved step by step as the daemon would see a fleet.
    `progress`: a terminal to draw a progress line on (nothing is drawn on a pipe or a log)."""
    model = load_model(model_path)
    engine = Engine(model, max_streams=max(len(streams), 1))
    out: list[list[Result]] = [[] for _ in streams]
    longest = max(len(s) for s in streams)
    chunk = 512  # steps per process() call: bounded memory, still one model call per round
    for start in range(0, longest, chunk):
        batch, owner = [], []
        for t in range(start, min(start + chunk, longest)):
            for k, s in enumerate(streams):
                if t < len(s):
                    batch.append(Reading(f"calibration-{k}", _TS0 + t * interval, tuple(map(float, s[t]))))
                    owner.append(k)
        for k, res in zip(owner, engine.process(batch)):
            if not isinstance(res, Result):
                raise DataError(f"calibration stream {k}: reading rejected by the engine: {res}")
            out[k].append(res)
        if progress is not None and progress.isatty():
            done = min(start + chunk, longest)
            progress.write(f"\rcalibrating: {100 * done // longest:3d} % of {longest} steps")
            progress.flush()
    if progress is not None and progress.isatty():
        progress.write("\r" + " " * 48 + "\r")
    return out


def calibrate(
    model: onnx.ModelProto,
    meta: dict[str, Any],
    streams: Sequence[np.ndarray],
    *,
    quantile: float = DEFAULT_QUANTILE,
    score_from: Sequence[int] | None = None,
    progress: TextIO | None = None,
) -> tuple[dict[str, Any], CalibrationReport]:
    """Return `meta` with its `calibration` section filled in, and the report.

    `score_from[k]`: the first row of stream k whose residuals and scores count (default 0). `fit` runs
    each whole series and counts only its held-out tail: the model's state is warm when the tail starts,
    so no held-out row is lost to the warm-up."""
    start = list(score_from) if score_from is not None else [0] * len(streams)
    if not 0 < quantile < 1:
        raise DataError(f"calibration quantile must be in (0, 1), got {quantile}")
    interval = float(meta.get("sample_interval_s") or 1.0)
    meta = {k: v for k, v in meta.items() if k != "calibration"}
    with tempfile.TemporaryDirectory(prefix="edge-lstm-cal-") as tmp:
        path = Path(tmp) / "calibrating.onnx"
        if meta["output"]["kind"] == "score":
            scores, _ = _normal_scores(model, meta, path, streams, interval, start, progress)
            return _finish(meta, streams, scores, quantile, None, None)
        targets = [meta["features"].index(n) for n in meta["output"]["names"]]
        scale = np.asarray(meta["scaling"]["scale"], np.float64)[targets]
        set_metadata(model, meta)
        save(model, path)
        residuals = []
        for s, results, first in zip(streams, run_engine(path, streams, interval, progress), start):
            for t in range(max(1, first), len(results)):
                if not results[t].warming_up:
                    pred = np.asarray(results[t - 1].prediction, np.float64)
                    residuals.append(np.asarray(s[t], np.float64)[targets] - pred)
        _enough(len(residuals), meta)
        res = np.asarray(residuals)
        mean = res.mean(axis=0)
        # A perfectly predicted (e.g. constant) feature would give std 0, which the contract forbids.
        std = np.maximum(res.std(axis=0), 1e-6 * scale)
        with_stats = {
            **meta,
            "calibration": {"residual_mean": mean.tolist(), "residual_std": std.tolist(), "threshold": 1.0},
        }  # placeholder: scores do not use it
        scores, bias_scale = _normal_scores(model, with_stats, path, streams, interval, start, progress)
        return _finish(meta, streams, scores, quantile, mean.tolist(), std.tolist(), bias_scale)


def _normal_scores(
    model: onnx.ModelProto,
    meta: dict[str, Any],
    path: Path,
    streams: Sequence[np.ndarray],
    interval: float,
    start: Sequence[int],
    progress: TextIO | None = None,
) -> tuple[np.ndarray, float | None]:
    """The normal scores of the counted rows, and the bias scale (below) of the model's calibration."""
    set_metadata(model, meta)
    save(model, path)
    runs = run_engine(path, streams, interval, progress)
    scores = [r.score for results, first in zip(runs, start) for r in results[first:] if not r.warming_up]
    _enough(len(scores), meta)
    # The `bias` channel's level on this normal data, relative to each stream's own threshold (its
    # (1 − risk) quantile; the maximum below 1 / risk rows). Streams learn their baseline from their
    # own first readings, so on a long recording the machine's later normal operation (a warm-up, a
    # load change) can reach beyond it; the daemon then sets no stream's threshold below that level.
    ratios = [
        r.bias / r.bias_threshold
        for results, first in zip(runs, start)
        for r in results[first:]
        if r.bias is not None and r.bias_threshold
    ]
    scale = float(np.quantile(ratios, 1.0 - ScoringConfig().risk, method="higher")) if ratios else None
    return np.asarray(scores, np.float64), (scale if scale is not None and scale > 1.0 else None)


def _enough(n: int, meta: dict[str, Any]) -> None:
    if n < MIN_SAMPLES:
        raise DataError(
            f"calibration data gives only {n} scored readings after the {meta.get('warmup_steps', 0)} "
            f"warm-up steps of each stream; at least {MIN_SAMPLES} are needed"
        )


def normal_states(streams: Sequence[np.ndarray], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The calibration data's operating states: mean and covariance of consecutive windows of each
    stream, scaled like the model's input (docs/scoring.md, "Known normal states"). At most MAX_STATES
    windows of at least STATE_WINDOW readings; a partial window counts when it is at least half a window."""
    offset = np.asarray(meta["scaling"]["offset"], np.float64)
    scale = np.asarray(meta["scaling"]["scale"], np.float64)
    total = sum(len(s) for s in streams)
    window = max(STATE_WINDOW, -(-total // MAX_STATES))
    levels = []
    for s in streams:
        u = (np.asarray(s, np.float64) - offset) / scale
        for start in range(0, len(u), window):
            part = u[start : start + window]
            if len(part) >= window // 2:
                levels.append(part)
    if len(levels) > MAX_STATES:  # per-stream remainders: keep an even spread
        levels = [levels[int(i)] for i in np.linspace(0, len(levels) - 1, MAX_STATES).round()]
    return [
        {"mean": p.mean(axis=0).tolist(), "cov": np.atleast_2d(np.cov(p, rowvar=False, bias=True)).tolist()}
        for p in levels
    ]


def _finish(
    meta: dict[str, Any],
    streams: Sequence[np.ndarray],
    scores: np.ndarray,
    quantile: float,
    mean: list[float] | None,
    std: list[float] | None,
    bias_scale: float | None = None,
) -> tuple[dict[str, Any], CalibrationReport]:
    threshold = threshold_from_scores(scores, quantile)
    if not threshold > 0:
        # Forecasts exact on (nearly) every normal reading, e.g. a constant series: any residual beyond
        # the largest normal one (or beyond the residual-std floor when there is none) is anomalous.
        positive = scores[scores > 0]
        threshold = float(positive.max()) if positive.size else ZERO_SCORES_THRESHOLD
    states = normal_states(streams, meta)
    cal: dict[str, Any] = {
        "threshold": threshold,
        "quantile": quantile,
        "samples": int(scores.size),
        "states": states,
    }
    if bias_scale is not None:
        cal["bias_scale"] = bias_scale
    if mean is not None:
        cal = {"residual_mean": mean, "residual_std": std, **cal}
    report = CalibrationReport(
        threshold, quantile, int(scores.size), mean, std, float(scores.mean()), float(scores.max())
    )
    return {**meta, "calibration": cal}, report
