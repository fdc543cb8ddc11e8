"""The score channel: the model's own per-reading score against its calibrated threshold (docs/scoring.md,
"Score").

Forecast models: the RMS z-score of the forecast residual (the reading minus the forecast made at the
stream's previous reading) against the model's calibrated residual statistics, compared with the
calibrated threshold carried to the configured risk (`extrapolate`). Score models: the model's first
output as it is. Instant: catches spikes and sudden changes as soon as the model's state is warm. No
per-stream state. The exporter's calibration runs through this same code, so the daemon and the
calibration cannot disagree about what a score is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...contract import ModelMeta
from ...npfast import count_nonzero
from ..channel import BaseChannel, Batch, Scores
from ..config import ScoringConfig
from ..stats import chi2k_quantile


def output_scaling(meta: ModelMeta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A forecast model's outputs: their feature indices, and their scaling's offset and scale."""
    targets = np.array([meta.features.index(n) for n in meta.output.names], dtype=np.intp)
    offset = np.asarray(meta.scaling.offset, dtype=np.float64)[targets]
    scale = np.asarray(meta.scaling.scale, dtype=np.float64)[targets]
    return targets, offset, scale


class ForecastScore(BaseChannel):
    """score: forecast models, the RMS z-score of the forecast residual against the model's calibration;
    score models, the model's first output; against the calibrated threshold carried to the configured
    risk (`threshold`, the same for every stream). Catches spikes and sudden changes."""

    name: ClassVar[str] = "score"
    fields: ClassVar[tuple[str, ...]] = ("score", "threshold")

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> ForecastScore:
        return cls(meta, config)

    def __init__(self, meta: ModelMeta, config: ScoringConfig) -> None:
        self.config = config
        cal = meta.calibration
        self.kind = meta.output.kind
        n_out = len(meta.output.names)
        self.threshold_value: float | None = None
        if cal is not None:
            self.threshold_value = cal.threshold
            mode = config.extrapolate
            level = effective_level(cal.quantile, cal.samples)
            if self.kind == "forecast" and mode != "off" and level is not None and cal.quantile is not None:
                risk = config.risk if mode == "risk" else 1.0 - cal.quantile
                self.threshold_value = extrapolate(cal.threshold, level, risk, n_out)
        if self.kind == "forecast":
            self.targets, self.out_offset, self.out_scale = output_scaling(meta)
        mean = cal.residual_mean if cal is not None and cal.residual_mean is not None else [0.0] * n_out
        std = cal.residual_std if cal is not None and cal.residual_std is not None else [1.0] * n_out
        self.residual_mean = np.asarray(mean, dtype=np.float64)
        self.residual_std = np.asarray(std, dtype=np.float64)
        self._thr: tuple[float | None, np.ndarray | None] = (None, None)  # the threshold and its 0-d array

    def threshold(self, cols: Mapping[str, np.ndarray]) -> float | None:
        """The calibrated threshold every stream's score is compared with (None: nothing flags)."""
        return self.threshold_value

    def forecast_scores(self, values: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """RMS z-score of `values[:, targets] - predicted`, one per row (feature units in, ≥ 0 out)."""
        residual = values[:, self.targets] - predicted
        z = (residual - self.residual_mean) / self.residual_std
        # np.add.reduce / F is np.mean's own sum and division, without its Python wrapper (3 µs per call).
        out: np.ndarray = np.sqrt(np.add.reduce(z * z, axis=1) / z.shape[1])
        return out

    def update(self, batch: Batch) -> Scores:
        if batch.predicted is not None:
            scores = self.forecast_scores(batch.values, batch.predicted)
            first = batch.steps == 0
            if count_nonzero(first):  # the masked write only when some stream's reading is its first
                scores[first] = 0.0  # nothing was predicted for a stream's first reading
        else:
            scores = batch.y[:, 0].astype(np.float64)
        n, thr = len(scores), self.threshold_value
        # Compared with the threshold once the model's state is warm; None: nothing flags on the score.
        # (The threshold as a 0-d array: a Python float operand costs the comparison ~1,600 instructions more.)
        if thr is not None and self._thr[0] is not thr:  # made once (again if the threshold was replaced)
            self._thr = (thr, np.array(thr, np.float64))
        flags = np.zeros(n, dtype=bool) if thr is None else (scores > self._thr[1]) & ~batch.warming
        thresholds = [None if thr is None else float(thr)] * n
        return Scores(flags, {"score": scores.tolist(), "threshold": thresholds}, {"score": scores})


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
    k = float(outputs)
    return threshold * math.sqrt(chi2k_quantile(1.0 - risk, k, 1e-12) / chi2k_quantile(level, k, 1e-12))


def threshold_from_scores(scores: np.ndarray, quantile: float) -> float:
    """The anomaly threshold: the `quantile` of scores seen on normal data (used by calibration)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise ValueError("no finite scores to calibrate a threshold from")
    return float(np.quantile(finite, quantile))
