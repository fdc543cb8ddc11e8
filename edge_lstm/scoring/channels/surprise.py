"""The surprise channel: a calibrated likelihood from statistics that keep learning (docs/scoring.md,
"Likelihood and surprise").

Per stream, from its own readings, with exponential forgetting over `scoring.horizon_s` seconds of
event time (a rate of gap / horizon per reading once the stream has learned its baseline, a plain running
mean before):

    inst    mean z²       z = forecast residual / its running std, per output   (forecast models)
    ewma    mean ē² / v   ē = EWMA of z (clipped), v its running mean square      (forecast models)
    level   mean ȳ² / v   ȳ = EWMA of the reading's standardised distance to its running level
    range   a reading beyond the stream's range so far by more than `range_margin` of that range

Each of the first three has its own tail, a peaks-over-threshold fit with forgetting of w^(1/4) (the
fourth root makes a heavy χ²-like tail nearly exponential: measured, it calibrates NAB's and SKAB's tails
where the plain exponential fit on w under-estimated them tenfold at 1e-4) with the χ²(F)/F law as prior.
The channels are combined as p-values, min-p with a Bonferroni factor:

    p = min(1, K · min_k p_k)      likelihood = 1 − p      surprise = −log10 p   (from log p: no saturation)

and the reading is flagged when p < `scoring.risk`. Forgetting by time, not readings: a 5-minute metric
learns a new normal within days, while a 1 Hz machine's statistics stay those of its first minutes for
the length of any fault (minutes to hours) — the same horizon serves both (docs/quality.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...contract import ModelMeta
from ...npfast import count_nonzero, f64
from ...state import Column, read_only
from ..channel import BaseChannel, Batch, Channel, Lazy, Scores
from ..config import ScoringConfig
from . import daily
from ._priors import TAIL_PRIORS
from .forecast import output_scaling

ROOT = 0.25  # the tails are fitted to w ** ROOT (computed as √√w)
TAIL_LEVEL = 0.05  # P(w > u) under the prior: u is the prior's 0.95 quantile
TAIL_PRIOR = 5.0  # pseudo-peaks the prior is worth
MAX_RATE = 0.05  # one reading after a long gap moves the statistics by at most this much
CLIP = 4.0  # after the baseline a reading moves a running variance by at most CLIP² times it (bounded influence)
CLIP2 = CLIP * CLIP
EXCESS_CAP = 10.0  # an excess enters the mean excess as at most this many times it (measured: 6-10 best)
LN10 = math.log(10.0)
LOG_RANGE_GATE = math.log(0.05)
SHIFT = 3.0  # level moved by more than this many of its standard deviations: a new normal, not the old
# The constants of the per-round arithmetic as 0-d arrays (npfast.f64: a Python float operand costs a ufunc
# call ~1,600 instructions more; the same float64 values).
_ZERO, _ONE, _CLIP2, _CAP, _SHIFT = f64(0.0), f64(1.0), f64(CLIP2), f64(EXCESS_CAP), f64(SHIFT)
_MAX_RATE, _TINY, _ZETA_MIN, _ZETA_FLOOR = f64(MAX_RATE), f64(1e-6), f64(1e-3), f64(1e-6)
_LOG_RANGE_GATE, _NEG_LN10 = f64(LOG_RANGE_GATE), f64(-LN10)


def _finite(x: np.ndarray) -> np.ndarray:
    """`x` with its non-finite values as 0; `x` itself when all are finite (the common case: a test and a
    count cost a third of the where())."""
    finite = np.isfinite(x)
    if count_nonzero(finite) == finite.size:
        return x
    out: np.ndarray = np.where(finite, x, 0.0)
    return out


def tail_prior(dof: int, *, table: bool = True) -> tuple[float, float]:
    """(u, mean excess) of (χ²(dof)/dof)^ROOT above its 1 − TAIL_LEVEL quantile (a fixed-seed sample;
    for dof ≤ 32 the same numbers from `_priors.TAIL_PRIORS` unless `table` is False)."""
    if table and dof in TAIL_PRIORS:
        return TAIL_PRIORS[dof]
    w = np.random.default_rng(0).chisquare(dof, 200_000) / dof
    t = w**ROOT
    u = float(np.quantile(t, 1.0 - TAIL_LEVEL))
    return u, float(np.mean(t[t > u] - u))


class Surprise(BaseChannel):
    """surprise: how rare the reading is under the stream's own recent law (forecast residual, its
    EWMA, the level, the range seen), learned with forgetting over `horizon_s`; publishes the calibrated
    `likelihood` and `surprise` = −log10(1 − likelihood), and flags at `risk`."""

    name: ClassVar[str] = "surprise"
    fields: ClassVar[tuple[str, ...]] = ("likelihood", "surprise")

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Surprise:
        return cls(meta, config)

    def __init__(self, meta: ModelMeta, config: ScoringConfig) -> None:
        self.config = config
        self.a = 2.0 / (config.surprise_span + 1.0)  # the EWMAs' weight of a new reading
        self.keep = 1 - self.a
        self.forecast = meta.output.kind == "forecast"
        f = len(meta.features)
        self.bins = config.daily_bins
        # tails: inst, ewma (forecast models), level, daily (with daily_bins)
        self.k = (3 if self.forecast else 1) + (1 if self.bins else 0)
        if self.forecast:
            self.targets, _, self.out_scale = output_scaling(meta)
        n_out = len(meta.output.names) if self.forecast else 1
        self.priors = (
            [tail_prior(n_out)] * (2 if self.forecast else 0)
            + [tail_prior(f)]
            + [tail_prior(1)] * (1 if self.bins else 0)
        )
        self.u = np.asarray([p[0] for p in self.priors])
        self.sigma0 = np.asarray([p[1] for p in self.priors])
        self.bonferroni = math.log(self.k + (1 if config.range_margin > 0 else 0))
        self.log_risk = math.log(config.risk)
        self.log_range = math.log(config.range_p)
        self._a, self._keep, self._horizon = f64(self.a), f64(self.keep), f64(config.horizon_s)
        self._bonferroni, self._log_risk = f64(self.bonferroni), f64(self.log_risk)
        # A reading whose daily statistic says nothing yet (the stream's first day) is tested one time fewer.
        self._bonferroni_first_day = f64(math.log(self.k - 1 + (config.range_margin > 0)) if self.bins else 0.0)
        self._var_floor = f64(config.var_floor)
        self._bounds = {CLIP: (f64(-CLIP), f64(CLIP)), 3 * CLIP: (f64(-3 * CLIP), f64(3 * CLIP))}  # _advance's
        self._range_margin = f64(config.range_margin)
        self._widths = {w: f64(w) for w in (n_out, f)}  # np.mean's divisor of a [B, w] row sum
        o, k = (n_out,), (self.k,)
        self.columns = {
            "surprise.n": Column((), np.float64, 0.0, exact=True),  # readings learned (running means before baseline)
            "surprise.rv": Column(o, np.float64, 1.0),  # residual mean square, scaled units
            "surprise.re": Column(o, np.float64, 0.0),  # EWMA of the standardised residual
            "surprise.rve": Column((), np.float64, 1.0),  # running mean of mean(re²)
            "surprise.mu": Column((f,), np.float64, 0.0),  # level, scaled units
            "surprise.vx": Column((f,), np.float64, 1.0),  # variance about it
            "surprise.ey": Column((f,), np.float64, 0.0),  # EWMA of the standardised level distance
            "surprise.vy": Column((), np.float64, 1.0),  # running mean of mean(ey²)
            "surprise.ref": Column((f,), np.float64, np.nan),  # the level when the stream's alarm was raised
            "surprise.lo": Column((f,), np.float64, np.inf),  # range seen, scaled units
            "surprise.hi": Column((f,), np.float64, -np.inf),
            "surprise.zeta": Column(k, np.float64, TAIL_LEVEL),  # per tail: P(w^ROOT > u)
            "surprise.sigma": Column(k, np.float64, 0.0),  # per tail: mean excess over u (0: the prior's)
        }
        if self.bins:
            self.columns.update(daily.columns(self.bins))
            self._daily_column = np.arange(self.k) == self.k - 1
            self.daily = daily.Daily(self.bins, f, config.horizon_s, self.keep, self.a, 3 * CLIP, CLIP2, MAX_RATE)

    def update(self, batch: Batch) -> Scores:
        cols, cfg = batch.cols, self.config
        n = cols["surprise.n"]
        learning = n < cfg.baseline
        # Past the baseline (the steady state) a round skips the learning branches: same numbers, fewer
        # numpy calls (each costs ~1 µs whatever the batch; bench/ab_engine.py --instructions).
        steady = not count_nonzero(learning)  # count_nonzero: a third of ndarray.any()'s cost
        rate = self._rate(batch.gap, n, learning, steady)
        w, quiet = self._statistics(batch, rate, learning, steady)
        t = np.sqrt(np.sqrt(w))  # w ** ROOT, cheaper than a power
        tu = t - self.u
        sigma = cols["surprise.sigma"]
        positive = sigma > _ZERO
        if count_nonzero(positive) < positive.size:  # the where() only while some tail has no peak yet
            sigma = np.where(positive, sigma, self.sigma0)
        log_p = self._log_survival(cols, t, tu, sigma)
        bonferroni = (
            self._bonferroni if quiet is None else np.where(quiet, self._bonferroni_first_day, self._bonferroni)
        )
        logp = np.minimum(_ZERO, np.minimum.reduce(log_p, axis=1) + bonferroni)
        if self.config.range_margin > 0:
            logp = self._gate_range(cols, batch.u, learning, logp)
        self._learn_tails(cols, t, tu, sigma, n, rate, learning, steady, quiet)
        cols["surprise.n"] = n + _ONE
        return self._scores(cols, batch.u, logp, learning, steady)

    def _rate(self, gap: np.ndarray, n: np.ndarray, learning: np.ndarray, steady: bool) -> np.ndarray:
        """Running means while learning the baseline; then forgetting by event time."""
        # np.clip's result, and NaN → 0: fmax drops a NaN gap for 0 (two calls fewer than a clip and an
        # isfinite where()). A gap is never -0.0 (a reading is newer than its stream's last).
        rate: np.ndarray = np.fmin(np.fmax(gap / self._horizon, _ZERO), _MAX_RATE)
        if not steady:
            rate = np.where(learning, 1.0 / (n + 1.0), rate)
        return rate

    def _gate_range(
        self, cols: dict[str, np.ndarray], u: np.ndarray, learning: np.ndarray, logp: np.ndarray
    ) -> np.ndarray:
        """A new extreme counts only for a reading the other statistics find unusual too: Gaussian noise
        sets new records beyond a short baseline's range now and then (measured: no loss on NAB)."""
        gate = logp < _LOG_RANGE_GATE
        if not count_nonzero(gate):  # the range still takes every reading in
            cols["surprise.lo"] = np.minimum(cols["surprise.lo"], u)
            cols["surprise.hi"] = np.maximum(cols["surprise.hi"], u)
            return logp
        beyond = self._range(cols, u, learning)
        out: np.ndarray = np.where(gate, np.minimum(logp, beyond), logp)
        return out

    def _scores(
        self, cols: dict[str, np.ndarray], u: np.ndarray, logp: np.ndarray, learning: np.ndarray, steady: bool
    ) -> Scores:
        if steady:
            flags = logp < self._log_risk
        else:
            ready = ~learning
            logp = np.where(ready, logp, 0.0)
            flags = ready & (logp < self.log_risk)
        likelihood = -np.expm1(logp)
        surprise = logp / _NEG_LN10  # the same bytes as -logp / LN10, one call fewer
        if steady:
            published_likelihood, published_surprise = likelihood.tolist(), surprise.tolist()
        else:
            published = ready.tolist()
            published_likelihood = [v if r else None for v, r in zip(likelihood.tolist(), published)]
            published_surprise = [v if r else None for v, r in zip(surprise.tolist(), published)]
        shifted = self._shifted(cols, u)
        fields: dict[str, list[Any]] = {"likelihood": published_likelihood, "surprise": published_surprise}
        signals = {"calibrated": likelihood, "surprise": surprise}
        if callable(shifted):  # read only when some alarm clears: computed then (Scored.shifted)
            return Scores(flags, fields, signals, {"shifted": shifted})
        signals["shifted"] = shifted
        return Scores(flags, fields, signals)

    def _shifted(self, cols: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray | Lazy:
        """Whether the reading is more than SHIFT of the stream's spread away from the level it had when its
        alarm was raised (an alarm that clears then has `adapted` to a new normal, it is not back to the
        old); the reference follows the level while no alarm is raised. With some alarm raised, a function
        that computes it: its only reader (engine.py, `_events`) needs it only in a round where one clears."""
        mu = cols["surprise.mu"]
        try:
            raised = cols["alarm.raised"]  # the state table's gathered columns: looked up, not .get (lazy)
        except KeyError:  # scored without an alarm (calibration)
            return np.zeros(len(mu), bool)
        if count_nonzero(raised):
            ref = read_only(cols, "surprise.ref")  # written back only if it changes
            kept = raised[:, None] & np.isfinite(ref)
            if count_nonzero(kept) < kept.size:  # the where() only when some reference follows the level
                ref = np.where(kept, ref, mu)
                cols["surprise.ref"] = ref
        else:
            # The old reference is not even gathered. And no stream of the round can clear its alarm (the
            # only reading of `shifted`: engine.py, `_events`) without having had it raised: nothing to compare.
            cols["surprise.ref"] = mu
            return np.zeros(len(mu), bool)
        vx = cols["surprise.vx"]  # this round's (the function may be called after the round's other channels)

        def shifted() -> np.ndarray:
            # logical_or.reduce: ndarray.any(axis=1)'s own reduction, without its Python wrapper.
            out: np.ndarray = np.logical_or.reduce(np.abs(u - ref) > _SHIFT * np.sqrt(vx), axis=1)
            return out

        return shifted

    def _statistics(
        self, batch: Batch, rate: np.ndarray, learning: np.ndarray, steady: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """[B, K] the per-reading statistics w (about 1 on normal data), before the statistics learn this
        reading, and where the daily statistic has nothing to say yet (None: it speaks for every reading,
        or is off); then advances the running statistics."""
        cols = batch.cols
        out = []
        rate_col = rate[:, None]  # one view for the [B, F] updates below
        if self.forecast and batch.predicted is not None:
            r = _finite((batch.values[:, self.targets] - batch.predicted) / self.out_scale)  # no forecast: 0
            z, ms_re = self._advance(cols, ("surprise.rv", "surprise.re"), r, rate_col, learning, steady, CLIP)
            rve = cols["surprise.rve"]
            # np.mean, without its wrapper
            out += [np.add.reduce(z * z, axis=1) / self._widths[z.shape[1]], ms_re / rve]
            cols["surprise.rve"] = self._mean_square(rve, ms_re, rate, learning, steady)
        elif self.forecast:
            out += [np.zeros(len(rate)), np.zeros(len(rate))]
        d = batch.u - cols["surprise.mu"]
        _, ms_ey = self._advance(cols, ("surprise.vx", "surprise.ey"), d, rate_col, learning, steady, 3 * CLIP)
        vy = cols["surprise.vy"]
        known = batch.signals.get("known") if self.config.surprise_known else None
        # A level the model's calibration data knows as normal operation (a machine warming up over hours
        # at 1 Hz) is not surprising, however far from the stream's own first minutes it is.
        out.append(ms_ey / vy if known is None else np.minimum(ms_ey / vy, known))
        cols["surprise.vy"] = self._mean_square(vy, ms_ey, rate, learning, steady)
        quiet = None
        if self.bins:
            # Not against the known states: they know the levels, not the hours they come at.
            w_daily, speaks = self.daily.statistic(cols, batch.u, batch.ts, batch.gap, rate, learning, steady)
            out.append(w_daily)
            if np.count_nonzero(speaks) < speaks.size:
                quiet = ~speaks
        mu = cols["surprise.mu"] + rate_col * d
        if not steady:
            mu = np.where((cols["surprise.n"] == 0)[:, None], batch.u, mu)
        cols["surprise.mu"] = mu
        w = np.array(out).T  # one array of the K statistics: the tails' arithmetic runs once for all
        return _finite(w), quiet

    def _advance(
        self,
        cols: dict[str, np.ndarray],
        keys: tuple[str, str],
        d: np.ndarray,
        rate_col: np.ndarray,
        learning: np.ndarray,
        steady: bool,
        bound: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One deviation d (forecast residual, or distance to the level) against its running mean square v
        and the EWMA e of d / √v clipped to ±bound: (d / √v, mean(e²) of the new e per reading); then v
        learns d² (the first reading: the residual's square, the level's floor)."""
        var_key, ewma_key = keys
        v = cols[var_key]
        z = d / np.sqrt(v)
        lo, hi = self._bounds[bound]
        e = self._keep * cols[ewma_key] + self._a * np.minimum(np.maximum(lo, z), hi)  # np.clip's result
        mean_square = np.add.reduce(e * e, axis=1) / self._widths[e.shape[1]]  # np.mean, without its wrapper
        dd = d * d
        d2 = np.minimum(dd, _CLIP2 * v)
        if not steady:
            d2 = np.where(learning[:, None], dd, d2)
        v_new = v + rate_col * (d2 - v)
        if not steady:
            first_value = dd if var_key == "surprise.rv" else self.config.var_floor
            v_new = np.where((cols["surprise.n"] == 0)[:, None], first_value, v_new)
        cols[var_key] = np.maximum(v_new, self._var_floor)
        cols[ewma_key] = e
        return z, mean_square

    @staticmethod
    def _mean_square(v: np.ndarray, e2: np.ndarray, rate: np.ndarray, learning: np.ndarray, steady: bool) -> np.ndarray:
        """The running mean of mean(e²) (`e2`), one reading's pull bounded by CLIP² times it after the baseline."""
        bounded = np.minimum(e2, _CLIP2 * v)
        if not steady:
            bounded = np.where(learning, e2, bounded)
        out: np.ndarray = np.maximum(v + rate * (bounded - v), _TINY)
        return out

    def _log_survival(
        self, cols: dict[str, np.ndarray], t: np.ndarray, tu: np.ndarray, sigma: np.ndarray
    ) -> np.ndarray:
        """[B, K] log P(t' > t), t = w^ROOT (tu = t − u), under each stream's tails (mean excesses `sigma`):
        exponential above u, log-linear below."""
        log_zeta = np.log(cols["surprise.zeta"])
        above = log_zeta - tu / sigma
        below = log_zeta * t / self.u
        out: np.ndarray = np.where(t >= self.u, above, below)
        return out

    def _learn_tails(
        self,
        cols: dict[str, np.ndarray],
        t: np.ndarray,
        tu: np.ndarray,
        sigma: np.ndarray,
        n: np.ndarray,
        rate: np.ndarray,
        learning: np.ndarray,
        steady: bool,
        quiet: np.ndarray | None,
    ) -> None:
        """Every reading enters the tails (a new regime becomes normal within the horizon; the daily tail only
        where its statistic speaks); while learning, from the second half of the baseline on (the scales
        above have settled), with the prior's weight."""
        r = rate
        if not steady:
            half = self.config.baseline / 2.0
            prior_n = TAIL_PRIOR / TAIL_LEVEL
            r = np.where(learning, np.where(n >= half, 1.0 / np.maximum(n - half + 1.0 + prior_n, 1.0), 0.0), rate)
        r = r[:, None]
        if quiet is not None:  # the daily tail learns from the readings its statistic speaks for
            r = np.where(self._daily_column & quiet[:, None], _ZERO, r)
        over = t > self.u
        zeta = cols["surprise.zeta"]
        zeta = zeta + r * (over - zeta)
        if count_nonzero(over):  # else σ stays (the prior's where it was 0)
            # An excess moves the mean excess by the rate of the peaks (r / ζ), bounded by 1.
            re = np.minimum(_ONE, r / np.maximum(zeta, _ZETA_MIN))
            excess = np.minimum(tu, _CAP * sigma)  # bounded influence: one reading moves σ little
            sigma = np.where(over, sigma + re * (excess - sigma), sigma)
        cols["surprise.zeta"] = np.minimum(np.maximum(_ZETA_FLOOR, zeta), _ONE)  # np.clip's result
        cols["surprise.sigma"] = sigma

    def _range(self, cols: dict[str, np.ndarray], u: np.ndarray, learning: np.ndarray) -> np.ndarray:
        """log p of the range channel: `range_p` for a reading beyond the stream's range so far by more
        than `range_margin` of it (0 otherwise); then the range takes the reading in."""
        lo, hi = cols["surprise.lo"], cols["surprise.hi"]
        margin = self._range_margin * (hi - lo)
        known = np.isfinite(margin) & (margin > _ZERO)
        beyond = known & ((u > hi + margin) | (u < lo - margin))
        cols["surprise.lo"] = np.minimum(lo, u)
        cols["surprise.hi"] = np.maximum(hi, u)
        out: np.ndarray = np.where(~learning & beyond.any(axis=1), self.log_range, 0.0)
        return out

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        return {}  # both are properties of a reading, published with it

    def adopt(self, previous: Channel, columns: dict[str, np.ndarray]) -> None:
        return None
