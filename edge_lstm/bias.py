"""Persistent forecast error per stream: a multivariate EWMA of the forecast residual against the
stream's own residuals during its baseline (docs/scoring.md, "Bias").

The instant `score` compares one residual with the model's calibration; a sustained fault that moves the
machine off the dynamics the model learned (a sensor offset, a cooler that no longer follows the load, a
cycle that stopped) makes each residual only a little larger, but all in the same direction, for as long
as it lasts. An EWMA of the residual *vector* (MEWMA, Lowry et al., Technometrics 1992) accumulates that:

    r_t = the standardised forecast residual (score.py)          one value per forecast output
    during the baseline (model warm, steps < baseline): m, C = mean and covariance of r (shrunk, floored)
    z_t = (1 − α) z_{t−1} + α w (r_t − m)                       α = 2 / (span + 1)
    bias = z_tᵀ C⁻¹ z_t (2 − α) / α / F                         ~ χ²(F)/F for white residuals
    flag when bias > h,   h: the stream's tail fit (tail.py), prior inflate · χ²(F)/F

Residuals are autocorrelated and heavy-tailed, so the prior law is inflated by `scoring.inflate` like the
deviation's. w ≤ 1 bounds one reading's pull (a Huber-type weight): a single wild residual counts as at
most a persistent shift that would drive `bias` to `influence` × h, so a glitch does not flag for the
next ~30 readings. The stream's own m and C make it work on streams whose level the model was not
trained on (the one-model SKAB protocol: docs/quality.md). Until a stream's baseline is learned, and for
score models (no forecast), the precision is 0 and nothing flags.
"""

from __future__ import annotations

import math

import numpy as np

from . import tail
from .baseline import BaselineConfig, _ndtri
from .state import Column


def columns(outputs: int, h0: float) -> dict[str, Column]:
    f, ff = (outputs,), (outputs, outputs)
    return {
        "bias.n": Column((), np.int64, 0),  # baseline: residuals summed
        "bias.sum": Column(f, np.float64),  # baseline: Σ r
        "bias.sq": Column(ff, np.float64),  # baseline: Σ r rᵀ
        # baseline: an EWMA of r, and the sums of its values after `span` readings (its long-run spread)
        "bias.zr": Column(f, np.float64),
        "bias.zn": Column((), np.int64, 0),
        "bias.zsum": Column(f, np.float64),
        "bias.zsq": Column(ff, np.float64),
        "bias.m": Column(f, np.float64),  # the stream's mean residual
        "bias.P": Column(ff, np.float64),  # C⁻¹ / λ (below); 0 until learned (nothing flags)
        "bias.z": Column(f, np.float64),  # the EWMA of r − m
        "bias.h": Column((), np.float64, h0),  # the stream's threshold of `bias`
        **tail.columns("bias.tail"),
    }


class Bias:
    """The bias channel for F forecast outputs; stateless apart from the columns it is given."""

    def __init__(self, outputs: int, config: BaselineConfig) -> None:
        self.F = outputs
        self.config = config
        self.h = self.quantile(1.0 - config.risk)
        u = self.quantile(1.0 - config.tail_level)
        self.prior = tail.TailPrior.through(u, config.tail_level, self.h, config.risk, config.tail_prior)
        self.columns = columns(outputs, self.h)

    def quantile(self, p: float) -> float:
        """p-quantile of the prior law inflate · χ²(F)/F (Wilson–Hilferty)."""
        k = float(self.F)
        z = _ndtri(p)
        return self.config.inflate * float(max(1.0 - 2.0 / (9.0 * k) + z * math.sqrt(2.0 / (9.0 * k)), 0.0) ** 3)

    def update(
        self, cols: dict[str, np.ndarray], r: np.ndarray, steps: np.ndarray, warm: np.ndarray, restart: np.ndarray
    ) -> np.ndarray:
        """One standardised residual per stream (`r` [B, F]; `warm`: the model's state is warm and a
        forecast was made; `restart`: a gap, not scored). Updates `cols` in place; returns `bias` (0 until
        the stream's baseline is learned). The threshold to compare it with is `cols["bias.h"]` before
        this call (causal)."""
        c = self.config
        learning = steps < c.baseline
        acc = learning & warm & ~restart
        if acc.any():  # past every stream's baseline (the steady state) the finiteness test is not needed
            acc &= np.isfinite(r).all(axis=1)
            ra = r[acc]
            cols["bias.n"][acc] += 1
            cols["bias.sum"][acc] += ra
            cols["bias.sq"][acc] += ra[:, :, None] * ra[:, None, :]
            a = c.alpha
            zr = (1.0 - a) * cols["bias.zr"][acc] + a * ra
            cols["bias.zr"][acc] = zr
            burnt = cols["bias.n"][acc] > c.span  # the EWMA has forgotten its start at 0
            if burnt.any():
                idx = np.flatnonzero(acc)[burnt]
                zb = zr[burnt]
                cols["bias.zn"][idx] += 1
                cols["bias.zsum"][idx] += zb
                cols["bias.zsq"][idx] += zb[:, :, None] * zb[:, None, :]
        done = steps == c.baseline - 1
        if done.any():
            self._learn(cols, done)
        live = ~learning & warm & ~restart
        a = c.alpha
        gain = (2.0 - a) / a / self.F
        d = r - cols["bias.m"]
        # 0 where not live or not finite (no forecast); np.nan_to_num did the latter at 4 µs more per call.
        d = np.where(live[:, None] & np.isfinite(d), d, 0.0)
        if c.influence > 0:
            # One reading moves z by at most what a shift driving `bias` to influence × h would.
            s = np.einsum("bi,bij,bj->b", d, cols["bias.P"], d) * gain
            cap = c.influence * cols["bias.h"]
            d = d * np.sqrt(np.minimum(1.0, cap / np.maximum(s, 1e-300)))[:, None]
        z = np.where(live[:, None], (1.0 - a) * cols["bias.z"] + a * d, cols["bias.z"])
        cols["bias.z"] = z
        out: np.ndarray = np.einsum("bi,bij,bj->b", z, cols["bias.P"], z) * gain
        if c.threshold_method == "pot" and c.tail_window > 0:
            # As the deviation's (baseline.py): the first `tail_window` readings after the baseline that
            # this channel does not flag, then frozen.
            fit = live & (steps < c.baseline + c.tail_window) & (out <= cols["bias.h"])
            tail.learn(cols, "bias.tail", "bias.h", out, fit, self.prior, c.risk)
        return out

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
        eye = np.eye(self.F)
        cov = (1.0 - c.shrink) * cov + c.shrink * cov * eye + c.var_floor * eye
        prec = np.linalg.inv(cov)
        zn = cols["bias.zn"][m].astype(np.float64)
        zm = cols["bias.zsum"][m] / np.maximum(zn, 1.0)[:, None]
        zcov = cols["bias.zsq"][m] / np.maximum(zn, 1.0)[:, None, None] - zm[:, :, None] * zm[:, None, :]
        a = c.alpha
        lam = np.einsum("bij,bji->b", prec, zcov) * (2.0 - a) / a / self.F
        lam = np.where(zn >= c.span, np.maximum(lam, 1.0), 1.0)  # too few EWMA values: no correction
        enough = (n > self.F)[:, None, None]
        cols["bias.m"][m] = mean
        cols["bias.P"][m] = np.where(enough, prec / lam[:, None, None], 0.0)
