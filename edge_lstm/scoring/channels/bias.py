"""The bias channel: persistent forecast error per stream, a multivariate EWMA of the forecast residual against the
stream's own residuals during its baseline (docs/scoring.md, "Bias").

The instant `score` compares one residual with the model's calibration; a sustained fault that moves the
machine off the dynamics the model learned (a sensor offset, a cooler that no longer follows the load, a
cycle that stopped) makes each residual only a little larger, but all in the same direction, for as long
as it lasts. An EWMA of the residual *vector* (MEWMA, Lowry et al., Technometrics 1992) accumulates that:

    r_t = the forecast residual, scaled units (forecast.py)          one value per forecast output
    during the baseline (model warm, steps < baseline): m, C = mean and covariance of r (shrunk, floored)
    z_t = (1 − α) z_{t−1} + α w (r_t − m)                       α = 2 / (span + 1)
    bias = z_tᵀ C⁻¹ z_t (2 − α) / α / F                         ~ χ²(F)/F for white residuals
    flag when bias > h,   h: the stream's tail fit (stats.py), prior inflate · χ²(F)/F

Residuals are autocorrelated and heavy-tailed, so the prior law is inflated by `scoring.inflate` like the
deviation's. w ≤ 1 bounds one reading's pull (a Huber-type weight): a single wild residual counts as at
most a persistent shift that would drive `bias` to `influence` × h, so a glitch does not flag for the
next ~30 readings. The stream's own m and C make it work on streams whose level the model was not
trained on (the one-model SKAB protocol: docs/quality.md). Until a stream's baseline is learned, and for
score models (no forecast), the precision is 0 and nothing flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...contract import ModelMeta
from ...npfast import count_nonzero, f64
from ...state import Column, read_only
from ..channel import BaseChannel, Batch, Scores, published
from ..config import ScoringConfig
from ..stats import TailPrior, chi2k_quantile, shrunk, tail_columns, tail_learn_unflagged
from .forecast import output_scaling


def columns(outputs: int, h0: float) -> dict[str, Column]:
    f, ff = (outputs,), (outputs, outputs)
    return {
        "bias.n": Column((), np.int64, 0),  # baseline: residuals summed
        "bias.sum": Column(f, np.float64),  # baseline: Σ r
        "bias.sq": Column(ff, np.float64, symmetric=True),  # baseline: Σ r rᵀ
        # baseline: an EWMA of r, and the sums of its values after `span` readings (its long-run spread)
        "bias.zr": Column(f, np.float64),
        "bias.zn": Column((), np.int64, 0),
        "bias.zsum": Column(f, np.float64),
        "bias.zsq": Column(ff, np.float64, symmetric=True),
        "bias.m": Column(f, np.float64),  # the stream's mean residual
        "bias.P": Column(ff, np.float64, symmetric=True),  # C⁻¹ / λ (below); 0 until learned (nothing flags)
        "bias.z": Column(f, np.float64),  # the EWMA of r − m
        "bias.h": Column((), np.float64, h0),  # the stream's threshold of `bias`
        **tail_columns("bias.tail"),
    }


_ZERO, _ONE, _TINY = f64(0.0), f64(1.0), f64(1e-300)  # step()'s constants (npfast.f64)


class Bias(BaseChannel):
    """bias: an EWMA of the forecast residual vector against the stream's own residuals during its
    baseline, against the stream's tail-fitted threshold; catches small one-sided forecast errors that
    last (offsets, drift, a stopped cycle). Forecast models only.

    `meta`: the model's metadata, for its outputs' scaling and the calibration's `bias_scale` (None:
    residuals in given units, scale 1)."""

    name: ClassVar[str] = "bias"
    fields: ClassVar[tuple[str, ...]] = ("bias", "bias_threshold")

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Bias | None:
        return cls(len(meta.output.names), config, meta) if meta.output.kind == "forecast" else None

    def __init__(self, outputs: int, config: ScoringConfig, meta: ModelMeta | None = None) -> None:
        self.F = outputs
        self.config = config
        self.h = self.quantile(1.0 - config.risk)
        u = self.quantile(1.0 - config.tail_level)
        self.prior = TailPrior.through(u, config.tail_level, self.h, config.risk, config.tail_prior)
        self.columns = columns(outputs, self.h)
        cal = meta.calibration if meta is not None else None
        # The calibration data's own bias, relative to its streams' thresholds (docs/scoring.md, "Bias"):
        # normal operation of this machine reached that far, so no stream's threshold is set below it.
        self.bias_scale = max(1.0, cal.bias_scale) if cal is not None and cal.bias_scale is not None else 1.0
        if meta is not None:
            self.targets, _, self.out_scale = output_scaling(meta)
        # step()'s settings as 0-d arrays (npfast.f64: ~1,600 instructions less per ufunc call than a Python
        # float operand; the same float64 values).
        a = config.alpha
        self._gain, self._keep, self._alpha = f64((2.0 - a) / a / self.F), f64(1.0 - a), f64(a)
        self._influence, self._bias_scale = f64(config.influence), f64(self.bias_scale)
        self._window_end = np.array(config.baseline + config.tail_window, np.int64)

    def quantile(self, p: float) -> float:
        """p-quantile of the prior law inflate · χ²(F)/F (Wilson–Hilferty)."""
        return self.config.inflate * chi2k_quantile(p, float(self.F))

    def threshold(self, cols: Mapping[str, np.ndarray], frozen: bool = False) -> np.ndarray:
        """The threshold each stream's bias is compared with, as it stands (`frozen`: only read this round)."""
        out: np.ndarray = (read_only(cols, "bias.h") if frozen else cols["bias.h"]) * self._bias_scale
        return out

    def frozen(self, steps: np.ndarray) -> bool:
        """Whether no stream of the round fits its tail any more (all past their tail window, or no tail
        fit): the thresholds are then only read (not written back to the table)."""
        c = self.config
        if c.threshold_method != "pot" or c.tail_window <= 0:
            return True
        return len(steps) > 0 and int(np.minimum.reduce(steps)) >= c.baseline + c.tail_window

    def update(self, batch: Batch) -> Scores:
        n = len(batch.steps)
        if batch.predicted is None:
            return Scores(np.zeros(n, bool), {"bias": [None] * n, "bias_threshold": [None] * n})
        cols = batch.cols
        # In the model's scaled units, like the deviation's (its variance floor means the same).
        r = (batch.values[:, self.targets] - batch.predicted) / self.out_scale
        h = self.threshold(cols, self.frozen(batch.steps))  # causal: the thresholds before this reading
        warm = ~batch.warming & (batch.steps > 0)
        bias = self.step(cols, r, batch.steps, warm, batch.restart)
        ready = batch.ready
        return Scores(ready & (bias > h), published(ready, {"bias": bias, "bias_threshold": h}))

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        c = dict(cols)
        return {"bias": float(self.value(c)) if ready else None, "bias_threshold": float(self.threshold(c))}

    def step(
        self, cols: dict[str, np.ndarray], r: np.ndarray, steps: np.ndarray, warm: np.ndarray, restart: np.ndarray
    ) -> np.ndarray:
        """One standardised residual per stream (`r` [B, F]; `warm`: the model's state is warm and a
        forecast was made; `restart`: a gap, not scored). Updates `cols` in place; returns `bias` (0 until
        the stream's baseline is learned). The threshold to compare it with is `cols["bias.h"]` before
        this call (causal)."""
        c = self.config
        # The youngest stream of the round: past its baseline (the steady state) the warm-up's masks and
        # branches are skipped whole, and past its tail window the window's.
        youngest = int(np.minimum.reduce(steps)) if len(steps) else c.baseline + c.tail_window
        if youngest < c.baseline:
            learning = steps < c.baseline
            self._warm_up(cols, r, learning & warm & ~restart, steps == c.baseline - 1)
            live = ~learning & warm & ~restart
            P = cols["bias.P"]
        else:  # count_nonzero: a third of ndarray.any()'s cost (here and below)
            live = warm & ~restart if count_nonzero(restart) else warm
            P = read_only(cols, "bias.P")  # written only when a baseline is learned (_learn): no write back
        gain = self._gain
        d = r - (cols["bias.m"] if youngest < c.baseline else read_only(cols, "bias.m"))
        # 0 where not live or not finite (no forecast); np.nan_to_num did the latter at 4 µs more per call.
        # In the steady state every stream is live and every d finite: then no where() at all.
        all_live = count_nonzero(live) == len(live)
        keep = np.isfinite(d) if all_live else live[:, None] & np.isfinite(d)
        if count_nonzero(keep) < keep.size:
            d = np.where(keep, d, _ZERO)
        if c.influence > 0:
            # One reading moves z by at most what a shift driving `bias` to influence × h would.
            s = np.einsum("bi,bij,bj->b", d, P, d) * gain
            frozen = c.threshold_method != "pot" or c.tail_window <= 0 or youngest >= c.baseline + c.tail_window
            cap = self._influence * (read_only(cols, "bias.h") if frozen else cols["bias.h"])
            d = d * np.sqrt(np.minimum(_ONE, cap / np.maximum(s, _TINY)))[:, None]
        z = self._keep * cols["bias.z"] + self._alpha * d
        if not all_live:  # a stream not live keeps its z
            z = np.where(live[:, None], z, cols["bias.z"])
        cols["bias.z"] = z
        out: np.ndarray = np.einsum("bi,bij,bj->b", z, P, z) * gain
        if c.threshold_method == "pot" and c.tail_window > 0 and youngest < c.baseline + c.tail_window:
            # As the deviation's (deviation.py): the first `tail_window` readings after the baseline that
            # this channel does not flag, then frozen.
            window = live & (steps < self._window_end)
            tail_learn_unflagged(cols, "bias.tail", "bias.h", out, window, self.prior, c.risk)
        return out

    def _warm_up(self, cols: dict[str, np.ndarray], r: np.ndarray, acc: np.ndarray, done: np.ndarray) -> None:
        """The baseline's sums: residuals of the streams in `acc` (those finite); m and P of those `done`."""
        c = self.config
        if count_nonzero(acc):
            acc &= np.isfinite(r).all(axis=1)
            ra = r[acc]
            cols["bias.n"][acc] += 1
            cols["bias.sum"][acc] += ra
            cols["bias.sq"][acc] += ra[:, :, None] * ra[:, None, :]
            a = c.alpha
            zr = (1.0 - a) * cols["bias.zr"][acc] + a * ra
            cols["bias.zr"][acc] = zr
            burnt = cols["bias.n"][acc] > c.span  # the EWMA has forgotten its start at 0
            if count_nonzero(burnt):
                idx = np.flatnonzero(acc)[burnt]
                zb = zr[burnt]
                cols["bias.zn"][idx] += 1
                cols["bias.zsum"][idx] += zb
                cols["bias.zsq"][idx] += zb[:, :, None] * zb[:, None, :]
        if count_nonzero(done):
            self._learn(cols, done)

    def value(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """`bias` from the columns as they stand (what the next reading's EWMA starts from)."""
        out: np.ndarray = np.einsum("...i,...ij,...j->...", cols["bias.z"], cols["bias.P"], cols["bias.z"])
        return out * (2.0 - self.config.alpha) / self.config.alpha / self.F

    def _learn(self, cols: dict[str, np.ndarray], m: np.ndarray) -> None:
        """End of the baseline: the residuals' mean and precision (shrunk toward the diagonal, floored),
        divided by λ ≥ 1, how much wider the EWMA of this stream's residuals spread during the baseline
        than white residuals would: tr(C⁻¹ cov(z)) (2 − α) / α / F, 1 for white ones. Residuals that
        wander (a model that fits this stream less well than its training data) would otherwise sit in
        the tail of the χ² law all the time (measured: one-model SKAB FAR 16.9 → 13.0 % with a model
        of another seed; docs/quality.md). Fewer than F + 1 residuals (a baseline shorter than the
        model's warm-up): precision 0, off."""
        c = self.config
        n = cols["bias.n"][m].astype(np.float64)
        nn = np.maximum(n, 1.0)
        mean = cols["bias.sum"][m] / nn[:, None]
        cov = cols["bias.sq"][m] / nn[:, None, None] - mean[:, :, None] * mean[:, None, :]
        prec = np.linalg.inv(shrunk(cov, c.shrink, c.var_floor))
        zn = cols["bias.zn"][m].astype(np.float64)
        zm = cols["bias.zsum"][m] / np.maximum(zn, 1.0)[:, None]
        zcov = cols["bias.zsq"][m] / np.maximum(zn, 1.0)[:, None, None] - zm[:, :, None] * zm[:, None, :]
        a = c.alpha
        lam = np.einsum("bij,bji->b", prec, zcov) * (2.0 - a) / a / self.F
        lam = np.where(zn >= c.span, np.maximum(lam, 1.0), 1.0)  # too few EWMA values: no correction
        enough = (n > self.F)[:, None, None]
        cols["bias.m"][m] = mean
        cols["bias.P"][m] = np.where(enough, prec / lam[:, None, None], 0.0)
