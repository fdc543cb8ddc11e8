"""Per-stream deviation from the stream's own normal operation (docs/scoring.md, "Deviation").

A next-step forecaster follows a sustained fault within a few steps, so its residual falls back to
normal while the machine is still faulty (measured on SKAB: docs/quality.md). This channel does not:
each stream learns, during its first `baseline` readings, its own level μ, a per-feature AR(1)
coefficient φ and the covariance Σ of the AR(1) innovation; afterwards every reading is scored by

    a  = (u_t − μ) − φ ⊙ (u_{t−1} − μ)        u: the reading, scaled by the model's scaling
    s  = aᵀ P a / F                           P = (shrunk, floored Σ)⁻¹: ~ χ²(F)/F on normal data
    e  = (1 − α) e + α s                      EWMA, α = 2 / (span + 1)
    flag when e > h,   P(e > h) = risk        h: the stream's own tail fit (tail.py), its prior the law
                                              χ²(k)/k, k = F (2 − α) / α / inflate
    μ += w (u_t − μ) / track,  w = min(1, clip / √s)     bounded-influence level tracking

A noisy feature (φ ≈ 0) is predicted by its level, so a shift stays in the score for as long as it lasts;
a smooth, drifting one (φ ≈ 1, a temperature) by its last value, so slow drift does not pile up but a
jump shows. A model whose calibration data recorded its normal operating states (mean and covariance of
windows of it) also measures each stream's distance to the nearest of them, smoothed the same way, and
publishes the smaller deviation: a machine that moves, over hours, to where the calibration data once
was is in known normal operation (docs/scoring.md, "Known normal states"). Everything is a fixed set of
per-stream columns of the state table (O(F²) each, O(K F²) for K known states), updated for a whole round
of streams at once; the warm-up sums are folded into μ, φ and P once, at the end of the baseline period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from . import tail
from .state import Column


@dataclass(frozen=True)
class BaselineConfig:
    baseline: int = 300  # readings a stream learns its normal operation from (no deviation flags before)
    span: int = 30  # EWMA span of the deviation, readings
    risk: float = 1e-4  # per-reading probability that normal operation exceeds the threshold
    inflate: float = 8.0  # variance of the EWMA relative to an i.i.d. χ² (autocorrelation, heavy tails)
    shrink: float = 0.1  # covariance shrinkage towards its diagonal (few readings, correlated sensors)
    var_floor: float = 1e-4  # variance floor, scaled units: a constant feature neither divides by 0 nor alarms
    # Level μ follows the stream after the baseline with this time constant, readings (0: fixed level),
    # and a reading with s > clip² moves it with weight clip / √s only (bounded influence): slow drift is
    # followed, a fault barely; a lasting change becomes the new normal over a few `track` readings.
    track: float = 3000.0
    clip: float = 2.0
    # A reading's s enters the smoothed deviation up to `influence` × the stream's threshold (0: no
    # bound). One wild reading (a spike, a glitch) otherwise lifts e above the threshold for ~80
    # readings and raises the alarm; the forecast channel still flags that reading itself. A lasting
    # fault still drives e to `influence` × h > h (measured in docs/quality.md).
    influence: float = 6.0
    # The threshold (docs/scoring.md, "Threshold"): "pot" fits each stream's own tail of `deviation` over
    # its `tail_window` readings after the baseline (peaks over u, the prior law's 1 − tail_level quantile,
    # with `tail_prior` pseudo-peaks of the prior); "chi2" uses the prior law alone, the same for every
    # stream.
    threshold_method: Literal["pot", "chi2"] = "pot"
    tail_window: int = 100
    tail_level: float = 0.1
    tail_prior: float = 5.0
    # Also measure the stream against the normal operating states its model was calibrated on (the
    # calibration's `states`): the deviation is the smaller of the stream's own and its distance to the
    # nearest known state, each smoothed on its own (`Baseline._known`).
    known_states: bool = True

    def __post_init__(self) -> None:
        if self.baseline < 3:
            raise ValueError(f"scoring.baseline must be >= 3 readings, got {self.baseline}")
        if self.span < 1:
            raise ValueError(f"scoring.span must be >= 1, got {self.span}")
        if not 0 < self.risk < 0.5:
            raise ValueError(f"scoring.risk must be in (0, 0.5), got {self.risk}")
        if not self.inflate >= 1:
            raise ValueError(f"scoring.inflate must be >= 1, got {self.inflate}")
        if not 0 <= self.shrink <= 1:
            raise ValueError(f"scoring.shrink must be in [0, 1], got {self.shrink}")
        if not self.var_floor > 0:
            raise ValueError(f"scoring.var_floor must be > 0, got {self.var_floor}")
        if not (self.track == 0 or self.track >= 1):
            raise ValueError(f"scoring.track must be 0 (fixed level) or >= 1 readings, got {self.track}")
        if not self.clip > 0:
            raise ValueError(f"scoring.clip must be > 0, got {self.clip}")
        if not (self.influence == 0 or self.influence > 1):
            raise ValueError(f"scoring.influence must be 0 (no bound) or > 1, got {self.influence}")
        if self.threshold_method not in ("pot", "chi2"):
            raise ValueError(f"scoring.threshold must be 'pot' or 'chi2', got {self.threshold_method!r}")
        if self.tail_window < 0:
            raise ValueError(f"scoring.tail_window must be >= 0 readings, got {self.tail_window}")
        if not self.risk < self.tail_level < 1:
            raise ValueError(f"scoring.tail_level must be in (risk, 1), got {self.tail_level}")
        if not self.tail_prior > 0:
            raise ValueError(f"scoring.tail_prior must be > 0 pseudo-peaks, got {self.tail_prior}")

    @property
    def alpha(self) -> float:
        return 2.0 / (self.span + 1.0)

    def dof(self, features: int) -> float:
        """k of the χ²(k)/k law the EWMA is modelled by."""
        return features * (2.0 - self.alpha) / self.alpha / self.inflate

    def threshold(self, features: int) -> float:
        """h with P(e > h) = risk under the prior law."""
        return self.quantile(features, 1.0 - self.risk)

    def quantile(self, features: int, p: float) -> float:
        """The p-quantile of the prior law χ²(k)/k (Wilson–Hilferty: (χ²(k)/k)^(1/3) is nearly normal)."""
        k = self.dof(features)
        z = _ndtri(p)
        return float(max(1.0 - 2.0 / (9.0 * k) + z * math.sqrt(2.0 / (9.0 * k)), 0.0) ** 3)

    def tail_prior_law(self, features: int) -> tail.TailPrior:
        """The prior law's tail above its (1 − tail_level) quantile, as a POT prior (tail.py)."""
        u = self.quantile(features, 1.0 - self.tail_level)
        return tail.TailPrior.through(u, self.tail_level, self.threshold(features), self.risk, self.tail_prior)


def columns(features: int, h0: float = 0.0, states: int = 0) -> dict[str, Column]:
    f = (features,)
    ff = (features, features)
    known = {"dev.ek": Column((states,), np.float64, _FAR * h0)} if states else {}
    return {
        **known,  # EWMA of the distance to each known normal state; starts far (a state must earn its way down)
        "dev.e": Column((), np.float64, 1.0),  # EWMA of s; starts at its normal mean
        "dev.h": Column((), np.float64, h0),  # the stream's threshold of e; starts at the prior's
        "dev.ref": Column(f, np.float64),  # the stream's first reading: sums are shifted by it (precision)
        "dev.prev": Column(f, np.float64),  # previous reading (scaled)
        "dev.pairs": Column((), np.int64, 0),  # warm-up: consecutive pairs (x_{t-1}, x_t) summed
        "dev.sum0": Column(f, np.float64),  # warm-up: Σ x_{t-1}
        "dev.sum1": Column(f, np.float64),  # warm-up: Σ x_t
        "dev.s00": Column(ff, np.float64),  # warm-up: Σ x_{t-1} x_{t-1}ᵀ
        "dev.s11": Column(ff, np.float64),  # warm-up: Σ x_t x_tᵀ
        "dev.s10": Column(ff, np.float64),  # warm-up: Σ x_t x_{t-1}ᵀ
        "dev.mu": Column(f, np.float64),  # level, relative to ref
        "dev.phi": Column(f, np.float64),  # per-feature AR(1) coefficient in [0, 1]
        "dev.P": Column(ff, np.float64, np.eye(features)),  # precision of the AR(1) innovation
        **tail.columns("dev.tail"),  # the stream's tail fit of e (tail.py)
    }


_FAR = 4.0  # a known state's smoothed distance starts at this many prior thresholds


class Baseline:
    """The deviation channel for one model (F features); stateless apart from the columns it is given.

    `state_mean` [K, F], `state_cov` [K, F, F]: the known normal states (scaled) from the model's
    calibration data (docs/scoring.md, "Known normal states"), or None."""

    def __init__(
        self,
        features: int,
        config: BaselineConfig,
        state_mean: np.ndarray | None = None,
        state_cov: np.ndarray | None = None,
    ) -> None:
        self.F = features
        self.config = config
        self.h = config.threshold(features)  # the prior's threshold: every stream's before its tail is fitted
        use = state_mean is not None and len(state_mean) > 0 and config.known_states
        self.state_mean = np.asarray(state_mean, np.float64).reshape(-1, features) if use else None
        self.state_P: np.ndarray | None = None
        if self.state_mean is not None:
            k = len(self.state_mean)
            cov = np.asarray(state_cov, np.float64).reshape(k, features, features)
            self.state_P = np.linalg.inv(_shrunk(cov, config))
            # (u − m)ᵀ P (u − m) = vec(u uᵀ) · vec(P) − 2 uᵀ P m + mᵀ P m: one matrix product for all
            # streams and states (a per-state einsum cost 8 µs per reading at K = 32, this 0.6 µs).
            self._vecP = self.state_P.reshape(k, features * features).T.copy()
            self._Pm = np.einsum("kfg,kg->fk", self.state_P, self.state_mean)
            self._mPm = np.einsum("kf,kfg,kg->k", self.state_mean, self.state_P, self.state_mean)
        self.columns = columns(features, self.h, 0 if self.state_mean is None else len(self.state_mean))
        self._k = config.dof(features)
        self.prior = config.tail_prior_law(features)

    def update(
        self, cols: dict[str, np.ndarray], u: np.ndarray, steps: np.ndarray, restart: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One reading per stream: `u` [B, F] scaled readings of streams that have seen `steps` readings
        before this one; `restart`: streams whose previous reading is too old to predict this one (a gap),
        which only re-anchor. Updates `cols` in place. Returns (e, ready, likelihood): the smoothed
        deviation, whether the stream's baseline is learned, and the likelihood (0 while not ready). The
        threshold each e is to be compared with is `cols["dev.h"]` *before* this call (causal)."""
        c = self.config
        first = steps == 0
        if first.any():
            cols["dev.ref"][first] = u[first]
            cols["dev.prev"][first] = u[first]
        x1 = u - cols["dev.ref"]
        x0 = cols["dev.prev"] - cols["dev.ref"]
        learning = steps < c.baseline
        acc = learning & ~first & ~restart
        if acc.any():
            a0, a1 = x0[acc], x1[acc]
            cols["dev.pairs"][acc] += 1
            cols["dev.sum0"][acc] += a0
            cols["dev.sum1"][acc] += a1
            cols["dev.s00"][acc] += a0[:, :, None] * a0[:, None, :]
            cols["dev.s11"][acc] += a1[:, :, None] * a1[:, None, :]
            cols["dev.s10"][acc] += a1[:, :, None] * a0[:, None, :]
        done = steps == c.baseline - 1
        if done.any():
            self._learn(cols, done)
        ready = ~learning
        d = (x1 - cols["dev.mu"]) - cols["dev.phi"] * (x0 - cols["dev.mu"])
        s = np.einsum("bi,bij,bj->b", d, cols["dev.P"], d) / self.F
        live = ready & ~restart
        n_live = np.count_nonzero(live)
        # The live streams' rows: a full slice when all are (the steady state); its views cost a fraction
        # of a boolean mask's copies and masked writes (seven per round, below and in _known).
        rows: np.ndarray | slice = slice(None) if n_live == len(live) else live
        s_in = np.minimum(s, c.influence * cols["dev.h"]) if c.influence > 0 else s  # bounded influence
        e = np.where(live, (1.0 - c.alpha) * cols["dev.e"] + c.alpha * s_in, cols["dev.e"])
        cols["dev.e"] = e
        own = e  # the tail is fitted to the stream's own deviation (the known states only excuse readings)
        if self.state_mean is not None:
            if n_live:
                self._known(cols, u, rows)
            e = self.current(cols)  # the smaller of its own and the nearest known state's
        if c.track > 0 and n_live:
            # Bounded-influence level tracking: normal slow drift is followed, a fault (large s) barely is.
            w = c.clip / np.sqrt(np.maximum(s[rows], c.clip * c.clip))
            mu = cols["dev.mu"][rows]
            cols["dev.mu"][rows] = mu + (w / c.track)[:, None] * (x1[rows] - mu)
        cols["dev.prev"] = u
        likelihood = np.where(ready, self.likelihood(e, cols), 0.0)
        if c.threshold_method == "pot" and c.tail_window > 0:
            # The stream's own tail: its first `tail_window` readings after the baseline, unflagged ones
            # only (DSPOT: an anomaly is not normal operation), then frozen (a fit that goes on learning
            # follows a slow fault's rising edge up: measured in docs/quality.md).
            fit = live & (steps < c.baseline + c.tail_window) & (own <= cols["dev.h"])
            tail.learn(cols, "dev.tail", "dev.h", own, fit, self.prior, c.risk)
        return e, ready, likelihood

    def _known(self, cols: dict[str, np.ndarray], u: np.ndarray, live: np.ndarray | slice) -> None:
        """The smoothed distance to each known normal operating state, updated for `live` rows: the
        Mahalanobis distance of the reading from the state's mean under the state's own covariance (both
        from a window of the calibration data). A stream that moved to where the calibration data once
        was (a machine warming up over hours) is in known normal operation; a fault that leaves every
        known state keeps scoring as before."""
        x = u[live]
        uu = (x[:, :, None] * x[:, None, :]).reshape(len(x), self.F * self.F)
        sk = np.maximum(uu @ self._vecP - 2.0 * (x @ self._Pm) + self._mPm, 0.0) / self.F  # [B, K]
        ek = (1.0 - self.config.alpha) * cols["dev.ek"][live] + self.config.alpha * sk
        cols["dev.ek"][live] = ek

    def same_states(self, other: Baseline) -> bool:
        """Whether `other` measures against the same known normal states (a model reload)."""
        a, b, pa, pb = self.state_mean, other.state_mean, self.state_P, other.state_P
        if a is None or b is None or pa is None or pb is None:
            return a is None and b is None
        return bool(a.shape == b.shape and np.array_equal(a, b) and np.array_equal(pa, pb))

    def current(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """The deviation as last published: the stream's own, or its distance to the nearest known state
        if smaller."""
        e: np.ndarray = cols["dev.e"]
        return np.minimum(e, cols["dev.ek"].min(axis=-1)) if "dev.ek" in cols else e

    def likelihood(self, e: np.ndarray, cols: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """P(e' <= e) under the stream's law of normal operation: near 1 means rarely this far out. The
        prior law χ²(k)/k; above u, with the stream's columns, its fitted tail (the body below u is the
        prior's, rescaled to meet the tail at u)."""
        k = self._k
        z = (np.cbrt(np.maximum(e, 0.0)) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
        body = _ndtr(z)
        if cols is None or self.config.threshold_method != "pot":
            return body
        p = self.prior
        n, peaks, excess = cols["dev.tail.n"], cols["dev.tail.peaks"], cols["dev.tail.excess"]
        zeta = (peaks + p.m0) / (n + p.m0 / p.p_u)
        above = 1.0 - tail.survival(np.maximum(e, p.u), n, peaks, excess, p)
        out: np.ndarray = np.where(e >= p.u, above, body * (1.0 - zeta) / (1.0 - p.p_u))
        return out

    def _learn(self, cols: dict[str, np.ndarray], m: np.ndarray) -> None:
        """End of the baseline period: moments of the pairs (x_{t−1}, x_t) → μ, φ, P (once per stream)."""
        c = self.config
        n = np.maximum(cols["dev.pairs"][m].astype(np.float64), 1.0)[:, None]
        m0, m1 = cols["dev.sum0"][m] / n, cols["dev.sum1"][m] / n
        n3 = n[:, :, None]
        c00 = cols["dev.s00"][m] / n3 - m0[:, :, None] * m0[:, None, :]
        c11 = cols["dev.s11"][m] / n3 - m1[:, :, None] * m1[:, None, :]
        c10 = cols["dev.s10"][m] / n3 - m1[:, :, None] * m0[:, None, :]
        v0 = np.einsum("bii->bi", c00)
        cov = np.einsum("bii->bi", c10)
        phi = np.clip(np.divide(cov, v0, out=np.zeros_like(cov), where=v0 > 0), 0.0, 1.0)
        # Covariance of a = (x_t − m1) − φ (x_{t−1} − m0): C11 − C10 Φ − Φ C01 + Φ C00 Φ.
        sigma = (
            c11
            - c10 * phi[:, None, :]
            - phi[:, :, None] * np.swapaxes(c10, 1, 2)
            + phi[:, :, None] * c00 * phi[:, None, :]
        )
        sigma = 0.5 * (sigma + np.swapaxes(sigma, 1, 2))
        cols["dev.phi"][m] = phi
        cols["dev.mu"][m] = m1
        cols["dev.P"][m] = np.linalg.inv(_shrunk(sigma, c))


def _shrunk(cov: np.ndarray, c: BaselineConfig) -> np.ndarray:
    """[..., F, F] covariances shrunk towards their diagonal and floored (few readings, correlated
    sensors; a constant feature neither divides by zero nor alarms)."""
    eye = np.eye(cov.shape[-1])
    out: np.ndarray = (1.0 - c.shrink) * cov + c.shrink * cov * eye + c.var_floor * eye
    return out


def _ndtr(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): no scipy on the daemon."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    out: np.ndarray = 0.5 * (1.0 + np.sign(z) * (1.0 - poly * np.exp(-x * x)))
    return out


def _ndtri(p: float) -> float:
    """Inverse standard normal CDF (the standard library's, Wichura's AS 241)."""
    return NormalDist().inv_cdf(p)
