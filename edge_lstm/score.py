"""Residual → calibrated anomaly score (docs/model-format.md, "Scoring").

Vectorised over a batch of streams. The exporter's calibration runs through this same code, so the
daemon and the calibration cannot disagree about what a score is.
"""

from __future__ import annotations

import numpy as np

from .contract import ModelMeta


class Scorer:
    """Turns a forecast and the reading that followed it into a score ≥ 0 and an anomaly flag."""

    def __init__(self, meta: ModelMeta) -> None:
        self.kind = meta.output.kind
        cal = meta.calibration
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
