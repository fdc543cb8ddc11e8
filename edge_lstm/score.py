"""Scoring: three channels per reading, vectorised over a round of streams (docs/scoring.md).

- `score` (forecast models): the RMS z-score of the forecast residual against the model's calibrated
  residual statistics, compared with `threshold`: the calibrated quantile carried to the configured risk
  (`extrapolate`). Instant: catches spikes and sudden changes as soon as the model's state is warm.
- `deviation` (baseline.py): how far the stream is from its own normal operation, learned per stream,
  smoothed, with a threshold at a chosen risk. Catches sustained and multivariate faults that a
  forecaster learns to follow.
- `bias` (bias.py, forecast models): a multivariate EWMA of the forecast residual against the stream's
  own residuals during its baseline. Catches small one-sided forecast errors that last (offsets, drift,
  a stopped cycle).

A reading is an `anomaly` when any channel exceeds its threshold, or a sensor is stuck (stuck.py). The
exporter's calibration runs through this same code, so the daemon and the calibration cannot disagree
about what a score is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import stuck as stuck_sensors
from .baseline import Baseline, BaselineConfig, _ndtri
from .bias import Bias
from .contract import ModelMeta
from .state import Column


@dataclass(frozen=True)
class ScoringConfig(BaselineConfig):
    # A reading more than this after its stream's previous one is not scored against it by the
    # deviation channel (a sensor offline for an hour): it only re-anchors the stream. 0 = never.
    max_gap_s: float = 600.0
    # Carry the forecast score's calibrated threshold (extrapolate(), docs/scoring.md) to 1 − `risk`
    # ("risk": every channel at the same per-reading risk), to the level the calibration asked for
    # ("quantile": only corrects the maximum of a few held-out scores), or use it as calibrated ("off").
    extrapolate: Literal["quantile", "risk", "off"] = "risk"
    # A feature repeating exactly the same value for more than max(stuck_after, 4 × its longest run in
    # the baseline) readings is stuck (stuck.py) and flags the reading. 0 = off.
    stuck_after: int = 60

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stuck_after < 0:
            raise ValueError(f"scoring.stuck_after must be >= 0 readings (0 = off), got {self.stuck_after}")


@dataclass
class Scored:
    """One round's scoring output, one entry per stream of the round."""

    scores: np.ndarray
    flags: np.ndarray
    warming: np.ndarray
    thresholds: np.ndarray | None  # the threshold each score was compared with; None: nothing flags
    deviation: np.ndarray  # smoothed deviation from the stream's normal operation
    deviation_threshold: np.ndarray  # the stream's threshold each deviation was compared with
    ready: np.ndarray  # the stream's baseline is learned (deviation and likelihood are meaningful)
    likelihood: np.ndarray
    stuck: np.ndarray  # [B, F]: features repeating one value for far longer than in the baseline
    bias: np.ndarray | None = None  # forecast models: persistent forecast error (bias.py)
    bias_threshold: np.ndarray | None = None


class Scorer:
    """Turns a forecast and the reading that followed it into a score ≥ 0 and an anomaly flag."""

    def __init__(self, meta: ModelMeta, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        cal = meta.calibration
        states = cal.states if cal is not None and cal.states else None
        state_mean = np.asarray([st.mean for st in states], np.float64) if states else None
        cov = np.asarray([st.cov for st in states], np.float64) if states else None
        self.baseline = Baseline(len(meta.features), self.config, state_mean, cov)
        self.columns: dict[str, Column] = {**self.baseline.columns, **stuck_sensors.columns(len(meta.features))}
        self.kind = meta.output.kind
        n_out = len(meta.output.names)
        self.threshold: float | None = None
        if cal is not None:
            self.threshold = cal.threshold
            mode = self.config.extrapolate
            level = effective_level(cal.quantile, cal.samples)
            if self.kind == "forecast" and mode != "off" and level is not None and cal.quantile is not None:
                risk = self.config.risk if mode == "risk" else 1.0 - cal.quantile
                self.threshold = extrapolate(cal.threshold, level, risk, n_out)
        if self.kind == "forecast":
            self.targets = np.array([meta.features.index(n) for n in meta.output.names], dtype=np.intp)
            off = np.asarray(meta.scaling.offset, dtype=np.float64)[self.targets]
            scale = np.asarray(meta.scaling.scale, dtype=np.float64)[self.targets]
            self.out_offset, self.out_scale = off, scale
        # The persistent forecast error (bias.py): forecast models only.
        self.bias = Bias(n_out, self.config) if self.kind == "forecast" else None
        if self.bias is not None:
            self.columns.update(self.bias.columns)
        # The calibration data's own bias, relative to its streams' thresholds (docs/scoring.md, "Bias"):
        # normal operation of this machine reached that far, so no stream's threshold is set below it.
        self.bias_scale = max(1.0, cal.bias_scale) if cal is not None and cal.bias_scale is not None else 1.0
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
        # np.add.reduce / F is np.mean's own sum and division, without its Python wrapper (3 µs per call).
        out: np.ndarray = np.sqrt(np.add.reduce(z * z, axis=1) / z.shape[1])
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
        h = cols["dev.h"].copy()  # the thresholds as they stood before this reading (causal)
        deviation, ready, likelihood = self.baseline.update(cols, u, steps, restart)
        stuck = stuck_sensors.update(cols, values, steps, self.config.baseline, self.config.stuck_after)
        flags = self.flags(scores, warming) | (ready & (deviation > h)) | stuck.any(axis=1)
        bias = hb = None
        if self.bias is not None and predicted is not None:
            # In the model's scaled units, like the deviation's (its variance floor means the same).
            r = (values[:, self.targets] - predicted) / self.out_scale
            hb = cols["bias.h"] * self.bias_scale  # causal, as h above
            bias = self.bias.update(cols, r, steps, ~warming & (steps > 0), restart)
            flags |= ready & (bias > hb)
        thr = None if self.threshold is None else np.full(len(scores), self.threshold)
        return Scored(scores, flags, warming, thr, deviation, h, ready, likelihood, stuck, bias, hb)

    def flags(self, scores: np.ndarray, warming: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            return np.zeros(len(scores), dtype=bool)
        out: np.ndarray = (scores > self.threshold) & ~warming
        return out


def effective_level(quantile: float | None, samples: int | None) -> float | None:
    """The level the calibrated threshold really is a quantile of: an empirical `quantile` above
    n / (n + 1) of n samples is their maximum, whose expected level is n / (n + 1) (e.g. 0.988 for the
    80 held-out rows of a 400-row fit, not the 0.999 asked for). None: unknown (an old model)."""
    if quantile is None:
        return None
    if samples is None or samples < 1:
        return quantile
    return min(quantile, samples / (samples + 1.0))


def extrapolate(threshold: float, level: float, risk: float, outputs: int) -> float:
    """The score's (1 − risk)-quantile from its calibrated `level`-quantile `threshold`.

    score² = mean of `outputs` squared z-scores, χ²(F)/F for Gaussian residuals. The calibration measured
    the real law's scale at `level` (its heavier tails included); the χ² law's shape carries it from there
    to 1 − risk: threshold · √(Q(1 − risk) / Q(level)), Q the χ²(F)/F quantile (Wilson–Hilferty)."""

    def q(p: float) -> float:
        k = float(outputs)
        return float(max(1.0 - 2.0 / (9.0 * k) + _ndtri(p) * math.sqrt(2.0 / (9.0 * k)), 1e-12) ** 3)

    return threshold * math.sqrt(q(1.0 - risk) / q(level))


def threshold_from_scores(scores: np.ndarray, quantile: float) -> float:
    """The anomaly threshold: the `quantile` of scores seen on normal data (used by calibration)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise ValueError("no finite scores to calibrate a threshold from")
    return float(np.quantile(finite, quantile))
