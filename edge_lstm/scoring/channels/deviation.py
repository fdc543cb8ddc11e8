"""The deviation channel: how far a stream is from its own normal operation (docs/scoring.md, "Deviation").

A next-step forecaster follows a sustained fault within a few steps, so its residual falls back to
normal while the machine is still faulty (measured on SKAB: docs/quality.md). This channel does not:
each stream learns, during its first `baseline` readings, its own level μ, a per-feature AR(1)
coefficient φ and the covariance Σ of the AR(1) innovation; afterwards every reading is scored by

    a  = (u_t − μ) − φ ⊙ (u_{t−1} − μ)        u: the reading, scaled by the model's scaling
    s  = aᵀ P a / F                           P = (shrunk, floored Σ)⁻¹: ~ χ²(F)/F on normal data
    e  = (1 − α) e + α s                      EWMA, α = 2 / (span + 1)
    flag when e > h,   P(e > h) = risk        h: the stream's own tail fit (stats.py), its prior the law
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

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...contract import ModelMeta
from ...npfast import count_nonzero, f64
from ...state import Column, read_only
from ..channel import BaseChannel, Batch, Channel, Lazy, Scores, published
from ..config import ScoringConfig
from ..stats import chi2k_cdf, shrunk, tail_above, tail_columns, tail_fit, tail_learn_unflagged


def columns(features: int, h0: float = 0.0, states: int = 0) -> dict[str, Column]:
    f = (features,)
    ff = (features, features)
    known = {"deviation.ek": Column((states,), np.float64, _FAR * h0)} if states else {}
    return {
        **known,  # EWMA of the distance to each known normal state; starts far (a state must earn its way down)
        "deviation.e": Column((), np.float64, 1.0),  # EWMA of s; starts at its normal mean
        "deviation.h": Column((), np.float64, h0),  # the stream's threshold of e; starts at the prior's
        "deviation.ref": Column(f, np.float64),  # the stream's first reading: sums are shifted by it (precision)
        "deviation.prev": Column(f, np.float64),  # previous reading (scaled)
        "deviation.pairs": Column((), np.int64, 0),  # warm-up: consecutive pairs (x_{t-1}, x_t) summed
        "deviation.sum0": Column(f, np.float64),  # warm-up: Σ x_{t-1}
        "deviation.sum1": Column(f, np.float64),  # warm-up: Σ x_t
        "deviation.s00": Column(ff, np.float64, symmetric=True),  # warm-up: Σ x_{t-1} x_{t-1}ᵀ
        "deviation.s11": Column(ff, np.float64, symmetric=True),  # warm-up: Σ x_t x_tᵀ
        "deviation.s10": Column(ff, np.float64),  # warm-up: Σ x_t x_{t-1}ᵀ
        "deviation.mu": Column(f, np.float64),  # level, relative to ref
        "deviation.phi": Column(f, np.float64),  # per-feature AR(1) coefficient in [0, 1]
        # precision of the AR(1) innovation (the inverse of a symmetric matrix: stored as its upper triangle)
        "deviation.P": Column(ff, np.float64, np.eye(features), symmetric=True),
        **tail_columns("deviation.tail"),  # the stream's tail fit of e (stats.py)
    }


_TAIL_KEYS = ("deviation.tail.n", "deviation.tail.peaks", "deviation.tail.excess")
_FAR = 4.0  # a known state's smoothed distance starts at this many prior thresholds
_TWO, _ZERO = f64(2.0), f64(0.0)


class Deviation(BaseChannel):
    """deviation: the smoothed distance of each reading from the stream's own normal operation (its
    level, AR(1) dynamics and covariance, learned over its first `scoring.baseline` readings), against
    the stream's own tail-fitted threshold; catches sustained and multivariate faults a forecaster
    follows. Also publishes `likelihood`, the stream's normal law's CDF at the deviation.

    `state_mean` [K, F], `state_cov` [K, F, F]: the known normal states (scaled) from the model's
    calibration data (docs/scoring.md, "Known normal states"), or None."""

    name: ClassVar[str] = "deviation"
    fields: ClassVar[tuple[str, ...]] = ("deviation", "deviation_threshold", "likelihood")

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Deviation:
        cal = meta.calibration
        states = cal.states if cal is not None and cal.states else None
        mean = np.asarray([st.mean for st in states], np.float64) if states else None
        cov = np.asarray([st.cov for st in states], np.float64) if states else None
        return cls(len(meta.features), config, mean, cov)

    def __init__(
        self,
        features: int,
        config: ScoringConfig,
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
            self.state_P = np.linalg.inv(shrunk(cov, config.shrink, config.var_floor))
            # (u − m)ᵀ P (u − m) = vec(u uᵀ) · vec(P) − 2 uᵀ P m + mᵀ P m: one matrix product for all
            # streams and states (a per-state einsum cost 8 µs per reading at K = 32, this 0.6 µs).
            self._vecP = self.state_P.reshape(k, features * features).T.copy()
            self._Pm = np.einsum("kfg,kg->fk", self.state_P, self.state_mean)
            self._mPm = np.einsum("kf,kfg,kg->k", self.state_mean, self.state_P, self.state_mean)
        self.columns = columns(features, self.h, 0 if self.state_mean is None else len(self.state_mean))
        # False when a later channel publishes `likelihood` (Scorer): the likelihood is then deferred (update).
        self.publish_likelihood = True
        self._k = config.dof(features)
        self.prior = config.tail_prior_law(features)
        # The settings step() and likelihood() compute with, as 0-d arrays (npfast.f64: ~1,600 instructions
        # less per ufunc call than a Python float operand; the same float64 values).
        a = config.alpha
        self._F, self._influence, self._keep, self._alpha = f64(features), f64(config.influence), f64(1.0 - a), f64(a)
        self._clip, self._clip2, self._track = f64(config.clip), f64(config.clip * config.clip), f64(config.track)
        self._window_end = np.array(config.baseline + config.tail_window, np.int64)
        self._body_scale, self._one = f64(1.0 - self.prior.p_u), f64(1.0)

    def threshold(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        """The threshold each stream's deviation is compared with, as it stands."""
        return cols["deviation.h"]

    def update(self, batch: Batch) -> Scores:
        cols = batch.cols
        # The thresholds as they stood before this reading (causal): step() replaces the column, it never
        # writes into this array (so no copy). Frozen (every stream past its tail window): only read.
        h = read_only(cols, "deviation.h") if self.frozen(batch.steps) else self.threshold(cols)
        signals: dict[str, np.ndarray] = {}  # step() adds "known" (with known states)
        deviation, ready, likelihood_of = self.step_deferred(cols, batch.u, batch.steps, batch.restart, signals)
        if not self.publish_likelihood:
            # A later channel publishes `likelihood` (the surprise channel's): this one's is read only by the
            # alarm's quiet test, which a quiet round never reaches (~40 ufunc calls it then skips).
            fields = published(ready, {"deviation": deviation, "deviation_threshold": h})
            return Scores(ready & (deviation > h), fields, signals, {"likelihood": likelihood_of})
        likelihood = likelihood_of()
        signals["likelihood"] = likelihood
        return Scores(
            ready & (deviation > h),
            published(ready, {"deviation": deviation, "deviation_threshold": h, "likelihood": likelihood}),
            signals,
        )

    def frozen(self, steps: np.ndarray) -> bool:
        """Whether no stream of the round fits its tail any more (all past their tail window, or no tail
        fit): the thresholds and the tail fits are then only read (not written back to the table)."""
        c = self.config
        if c.threshold_method != "pot" or c.tail_window <= 0:
            return True
        return len(steps) > 0 and int(np.minimum.reduce(steps)) >= c.baseline + c.tail_window

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        c = dict(cols)
        return {
            "deviation": float(self.current(c)) if ready else None,
            "deviation_threshold": float(c["deviation.h"]),
            "likelihood": float(self.likelihood(self.current(c), c)) if ready else None,
        }

    def step(
        self,
        cols: dict[str, np.ndarray],
        u: np.ndarray,
        steps: np.ndarray,
        restart: np.ndarray,
        signals: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`step_deferred` with the likelihood computed."""
        e, ready, likelihood_of = self.step_deferred(cols, u, steps, restart, signals)
        return e, ready, likelihood_of()

    def step_deferred(
        self,
        cols: dict[str, np.ndarray],
        u: np.ndarray,
        steps: np.ndarray,
        restart: np.ndarray,
        signals: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Lazy]:
        """One reading per stream: `u` [B, F] scaled readings of streams that have seen `steps` readings
        before this one; `restart`: streams whose previous reading is too old to predict this one (a gap),
        which only re-anchor. Updates `cols` in place. Returns (e, ready, likelihood): the smoothed
        deviation, whether the stream's baseline is learned, and the likelihood (0 while not ready). The
        threshold each e is to be compared with is `cols["deviation.h"]` *before* this call (causal). With
        known states, `signals` (if given) gets "known": the smoothed distance to the nearest (≈ 1 inside one)."""
        c = self.config
        # The youngest stream of the round: past its baseline (the steady state) the warm-up's masks and
        # branches are skipped whole, and past its tail window the window's.
        youngest = int(np.minimum.reduce(steps)) if len(steps) else c.baseline + c.tail_window
        first = steps == 0 if youngest < c.baseline else None
        frozen = c.threshold_method != "pot" or c.tail_window <= 0 or youngest >= c.baseline + c.tail_window
        if first is not None and count_nonzero(first):  # count_nonzero: a third of ndarray.any()'s cost
            cols["deviation.ref"][first] = u[first]
            cols["deviation.prev"][first] = u[first]
        # Past every stream's baseline ref, φ and P are only read: peeked, not written back to the table.
        ref = cols["deviation.ref"] if first is not None else read_only(cols, "deviation.ref")
        x1 = u - ref
        x0 = cols["deviation.prev"] - ref
        if first is not None:
            learning = steps < c.baseline
            self._warm_up(cols, x0, x1, learning & ~first & ~restart, steps == c.baseline - 1)
            ready = ~learning
        else:
            ready = np.ones(len(steps), bool)
        phi = cols["deviation.phi"] if first is not None else read_only(cols, "deviation.phi")
        d = (x1 - cols["deviation.mu"]) - phi * (x0 - cols["deviation.mu"])
        P = cols["deviation.P"] if first is not None else read_only(cols, "deviation.P")
        s = np.einsum("bi,bij,bj->b", d, P, d) / self._F
        live = ready & ~restart if count_nonzero(restart) else ready
        n_live = count_nonzero(live)
        # The live streams' rows: a full slice when all are (the steady state); its views cost a fraction
        # of a boolean mask's copies and masked writes (seven per round, below and in _known).
        all_live = n_live == len(live)
        rows: np.ndarray | slice = slice(None) if all_live else live
        h = read_only(cols, "deviation.h") if frozen else cols["deviation.h"]
        s_in = np.minimum(s, self._influence * h) if c.influence > 0 else s  # bounded influence
        e = self._keep * cols["deviation.e"] + self._alpha * s_in
        if not all_live:  # the where() only when some stream is not live (its e stays)
            e = np.where(live, e, cols["deviation.e"])
        cols["deviation.e"] = e
        own = e  # the tail is fitted to the stream's own deviation (the known states only excuse readings)
        if self.state_mean is not None:
            if n_live:
                self._known(cols, u, rows)
            nearest = np.minimum.reduce(cols["deviation.ek"], axis=-1)  # ndarray.min, without its wrapper
            e = np.minimum(e, nearest)  # current(): the smaller of its own and the nearest known state's
            if signals is not None:
                signals["known"] = nearest  # reduced once for both
        if c.track > 0 and n_live:
            # Bounded-influence level tracking: normal slow drift is followed, a fault (large s) barely is.
            w = self._clip / np.sqrt(np.maximum(s[rows], self._clip2))
            mu = cols["deviation.mu"][rows]
            cols["deviation.mu"][rows] = mu + (w / self._track)[:, None] * (x1[rows] - mu)
        cols["deviation.prev"] = u
        some_learn = first is not None and count_nonzero(ready) < len(ready)  # then 0 where a stream learns
        likelihood = self._deferred(e, cols, frozen, ready if some_learn else None)
        if c.threshold_method == "pot" and c.tail_window > 0 and youngest < c.baseline + c.tail_window:
            # The stream's own tail: its first `tail_window` readings after the baseline, unflagged ones
            # only (DSPOT: an anomaly is not normal operation), then frozen (a fit that goes on learning
            # follows a slow fault's rising edge up: measured in docs/quality.md).
            window = live & (steps < self._window_end)
            tail_learn_unflagged(cols, "deviation.tail", "deviation.h", own, window, self.prior, c.risk)
        return e, ready, likelihood

    def _deferred(self, e: np.ndarray, cols: dict[str, np.ndarray], frozen: bool, ready: np.ndarray | None) -> Lazy:
        """The likelihood of `e` as a function, computed when called (or never) from the tail fits as they
        stand now: frozen ones are read when called (nothing writes them this round), the others are
        taken now (the tail learning that follows replaces their arrays, it never writes into them)."""
        fits: dict[str, np.ndarray] = cols if frozen else {k: cols[k] for k in _TAIL_KEYS}

        def likelihood() -> np.ndarray:
            out = self.likelihood(e, fits, frozen)
            return out if ready is None else np.where(ready, out, 0.0)

        return likelihood

    def _warm_up(
        self, cols: dict[str, np.ndarray], x0: np.ndarray, x1: np.ndarray, acc: np.ndarray, done: np.ndarray
    ) -> None:
        """The baseline's sums: pairs (x_{t−1}, x_t) of the streams in `acc`; μ, φ, P of those `done`."""
        if count_nonzero(acc):
            a0, a1 = x0[acc], x1[acc]
            cols["deviation.pairs"][acc] += 1
            cols["deviation.sum0"][acc] += a0
            cols["deviation.sum1"][acc] += a1
            cols["deviation.s00"][acc] += a0[:, :, None] * a0[:, None, :]
            cols["deviation.s11"][acc] += a1[:, :, None] * a1[:, None, :]
            cols["deviation.s10"][acc] += a1[:, :, None] * a0[:, None, :]
        if count_nonzero(done):
            self._learn(cols, done)

    def _known(self, cols: dict[str, np.ndarray], u: np.ndarray, live: np.ndarray | slice) -> None:
        """The smoothed distance to each known normal operating state, updated for `live` rows: the
        Mahalanobis distance of the reading from the state's mean under the state's own covariance (both
        from a window of the calibration data). A stream that moved to where the calibration data once
        was (a machine warming up over hours) is in known normal operation; a fault that leaves every
        known state keeps scoring as before."""
        x = u[live]
        uu = (x[:, :, None] * x[:, None, :]).reshape(len(x), self.F * self.F)
        sk = np.maximum(uu @ self._vecP - _TWO * (x @ self._Pm) + self._mPm, _ZERO) / self._F  # [B, K]
        ek = self._keep * cols["deviation.ek"][live] + self._alpha * sk
        cols["deviation.ek"][live] = ek

    def adopt(self, previous: Channel, columns: dict[str, np.ndarray]) -> None:
        """Distances to the old model's known states mean nothing for the new ones: start them far."""
        if isinstance(previous, Deviation) and not self.same_states(previous) and "deviation.ek" in columns:
            columns["deviation.ek"][:] = self.columns["deviation.ek"].init

    def same_states(self, other: Deviation) -> bool:
        """Whether `other` measures against the same known normal states (a model reload)."""
        a, b, pa, pb = self.state_mean, other.state_mean, self.state_P, other.state_P
        if a is None or b is None or pa is None or pb is None:
            return a is None and b is None
        return bool(a.shape == b.shape and np.array_equal(a, b) and np.array_equal(pa, pb))

    def current(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """The deviation as last published: the stream's own, or its distance to the nearest known state
        if smaller."""
        e: np.ndarray = cols["deviation.e"]
        if "deviation.ek" not in cols:
            return e
        out: np.ndarray = np.minimum(e, np.minimum.reduce(cols["deviation.ek"], axis=-1))  # ndarray.min, no wrapper
        return out

    def likelihood(self, e: np.ndarray, cols: dict[str, np.ndarray] | None = None, frozen: bool = False) -> np.ndarray:
        """P(e' <= e) under the stream's law of normal operation: near 1 means rarely this far out. The
        prior law χ²(k)/k; above u, with the stream's columns, its fitted tail (the body below u is the
        prior's, rescaled to meet the tail at u). `frozen`: the tail fits are only read this round."""
        if cols is None or self.config.threshold_method != "pot":
            return chi2k_cdf(e, self._k)
        p = self.prior
        if frozen:
            n = read_only(cols, "deviation.tail.n")
            peaks, excess = read_only(cols, "deviation.tail.peaks"), read_only(cols, "deviation.tail.excess")
        else:
            n, peaks, excess = cols["deviation.tail.n"], cols["deviation.tail.peaks"], cols["deviation.tail.excess"]
        zeta, sigma = tail_fit(n, peaks, excess, p)  # once for the tail and the body below
        # Each side is computed only when some reading is on it: normal operation is mostly below u (the
        # body's ~25 numpy calls, no tail), an anomalous stretch above it (the tail's, no body).
        tail = e >= p.arrays.u
        n_tail, size = count_nonzero(tail), np.size(tail)
        if n_tail < size:
            body: np.ndarray = chi2k_cdf(e, self._k) * (self._one - zeta) / self._body_scale
            if not n_tail:
                return body
        # tail_survival at x = max(e, u) >= u without its x >= u where() (always true) and its second ζ, σ.
        u = p.arrays.u
        above: np.ndarray = self._one - tail_above(np.maximum(e, u), zeta, sigma, u)
        if n_tail == size:
            return above
        out: np.ndarray = np.where(tail, above, body)
        return out

    def _learn(self, cols: dict[str, np.ndarray], m: np.ndarray) -> None:
        """End of the baseline period: moments of the pairs (x_{t−1}, x_t) → μ, φ, P (once per stream)."""
        c = self.config
        n = np.maximum(cols["deviation.pairs"][m].astype(np.float64), 1.0)[:, None]
        m0, m1 = cols["deviation.sum0"][m] / n, cols["deviation.sum1"][m] / n
        n3 = n[:, :, None]
        c00 = cols["deviation.s00"][m] / n3 - m0[:, :, None] * m0[:, None, :]
        c11 = cols["deviation.s11"][m] / n3 - m1[:, :, None] * m1[:, None, :]
        c10 = cols["deviation.s10"][m] / n3 - m1[:, :, None] * m0[:, None, :]
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
        cols["deviation.phi"][m] = phi
        cols["deviation.mu"][m] = m1
        cols["deviation.P"][m] = np.linalg.inv(shrunk(sigma, c.shrink, c.var_floor))
