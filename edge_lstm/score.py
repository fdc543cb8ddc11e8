"""Scoring: two channels per reading, vectorised over a round of streams (docs/scoring.md).

- `score` (forecast models): the RMS z-score of the forecast residual against the model's calibrated
  residual statistics, compared with the calibrated `threshold`. Instant: catches spikes and sudden
  changes as soon as the model's state is warm.
- `deviation` (baseline.py): how far the stream is from its own normal operation, learned per stream,
  smoothed, with a threshold at a chosen risk. Catches sustained and multivariate faults that a
  forecaster learns to follow.

A reading is an `anomaly` when either channel exceeds its threshold. The exporter's calibration runs
through this same code, so the daemon and the calibration cannot disagree about what a score is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .baseline import Baseline, BaselineConfig
from .contract import ModelMeta
from .state import Column


@dataclass(frozen=True)
class ScoringConfig(BaselineConfig):
    # A reading more than this after its stream's previous one is not scored against it by the
    # deviation channel (a sensor offline for an hour): it only re-anchors the stream. 0 = never.
    max_gap_s: float = 600.0


@dataclass
class Scored:
    """One round's scoring output, one entry per stream of the round."""

    scores: np.ndarray
    flags: np.ndarray
    warming: np.ndarray
    thresholds: np.ndarray | None  # the threshold each score was compared with; None: nothing flags
    deviation: np.ndarray  # smoothed deviation from the stream's normal operation
    ready: np.ndarray  # the stream's baseline is learned (deviation and likelihood are meaningful)
    likelihood: np.ndarray


class Scorer:
    """Turns a forecast and the reading that followed it into a score ≥ 0 and an anomaly flag."""

    def __init__(self, meta: ModelMeta, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        cal = meta.calibration
        self.baseline = Baseline(len(meta.features), self.config)
        self.columns: dict[str, Column] = dict(self.baseline.columns)
        self.kind = meta.output.kind
        self.threshold: float | None = cal.threshold if cal is not None else None
        n_out = len(meta.output.names)
        if self.kind == "forecast":
            self.targets = np.array([meta.features.index(n) for n in meta.output.names], dtype=np.intp)
            off = np.asarray(meta.scaling.offset, dtype=np.float64)[self.targets]
            scale = np.asarray(meta.scaling.scale, dtype=np.float64)[self.targets]
            self.out_offset, self.out_scale = off, scale
        mean = cal.residual_mean if cal is not None and cal.residual_mean is not None else [0.0] * n_out
        std = cal.residual_std if cal is not None and cal.residual_std is not None else [1.0] * n_out
        self.residual_mean = np.asarray(mean, dtype=np.float64)
        self.residual_std = np.asarray(std, dtype=np.float64)

    def unscale(self, y: np.ndarray) -> np.ndarray:
        """Forecast outputs (scaled) → predictions in feature units."""
        return y.astype(np.float64) * self.out_scale + self.out_offset

    def forecast_scores(self, values: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """RMS z-score of `values[:, targets] - predicted`, one per row (feature units in, ≥ 0 out)."""
        residual = values[:, self.targets] - predicted
        z = (residual - self.residual_mean) / self.residual_std
        out: np.ndarray = np.sqrt(np.mean(z * z, axis=1))
        return out

    def score(
        self,
        cols: dict[str, np.ndarray],
        values: np.ndarray,
        u: np.ndarray,
        y: np.ndarray,
        predicted: np.ndarray | None,
        steps: np.ndarray,
        warmup: int,
        gap: np.ndarray,
    ) -> Scored:
        """Score one round: `values` (feature units) and `u` (scaled) of streams that have seen `steps`
        readings before, `y` the model's output for them, `predicted` the forecasts made at their previous
        reading (forecast models), `gap` the seconds since their previous reading. `cols` are the streams'
        scoring columns, updated in place."""
        warming = steps < warmup
        if predicted is not None:
            scores = self.forecast_scores(values, predicted)
            scores[steps == 0] = 0.0  # nothing was predicted for a stream's first reading
        else:
            scores = y[:, 0].astype(np.float64)
        max_gap = self.config.max_gap_s
        restart = (gap > max_gap) & (steps > 0) if max_gap > 0 else np.zeros(len(steps), bool)
        deviation, ready, likelihood = self.baseline.update(cols, u, steps, restart)
        flags = self.flags(scores, warming) | (ready & (deviation > self.baseline.h))
        thr = None if self.threshold is None else np.full(len(scores), self.threshold)
        return Scored(scores, flags, warming, thr, deviation, ready, likelihood)

    def flags(self, scores: np.ndarray, warming: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            return np.zeros(len(scores), dtype=bool)
        out: np.ndarray = (scores > self.threshold) & ~warming
        return out


def threshold_from_scores(scores: np.ndarray, quantile: float) -> float:
    """The anomaly threshold: the `quantile` of scores seen on normal data (used by calibration)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise ValueError("no finite scores to calibrate a threshold from")
    return float(np.quantile(finite, quantile))
