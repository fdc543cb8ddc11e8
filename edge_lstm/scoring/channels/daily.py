"""The surprise channel's time-of-day statistic: how far a reading is from what its hour of the day usually
brings (docs/quality.md, "Time of day").

Per stream and per bin of the UTC day (`scoring.daily_bins`, 12: two hours each), a running level and spread of
the scaled reading (of its features' mean: a duty cycle moves a machine's sensors together), learned
with forgetting over `scoring.horizon_s` of the bin's own readings (a bin sees 1/bins of them, so it
learns at bins × the stream's rate). The statistic mirrors the level statistic:

    daily   ē² / v   ē = EWMA of the reading's standardised distance to its bin's level

A one-step forecast follows a broken daily pattern within a step or two (the jump that did not come, a
flat stretch in a day that peaks), and the level statistic measures against the whole day's spread; the
bin's own level and spread see it (NAB's artificial daily files; NAB's likelihood 59.7 → 64.7,
docs/quality.md). A stream without a daily cycle gets a level statistic
per hour, no worse than the level's; timestamps that are not wall-clock time (a counter) make the bins
arbitrary but harmless.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from ...npfast import count_nonzero, f64
from ...state import Column

DAY_S: Final = 86_400.0
LEARNED: Final = 3  # a bin's level is compared with once it has seen this many readings
WARM: Final = 20  # a bin learns as a running mean for its first readings, then with forgetting
FIRST_VAR: Final = 1e-2  # a bin's spread after its first reading, scaled units² (the running mean takes over)
_DAY, _ZERO, _ONE, _TINY, _FIRST_VAR = f64(DAY_S), f64(0.0), f64(1.0), f64(1e-6), f64(FIRST_VAR)
_LEARNED, _WARM, _N0, _N1 = np.uint8(LEARNED), np.uint8(WARM), np.uint8(0), np.uint8(1)
_I0 = np.intp(0)


def columns(bins: int) -> dict[str, Column]:
    """The statistic's state: 9 bytes per bin, 16 more per stream (float32 storage), whatever the features:
    the profile is of the features' mean (per feature it cost 8 · F bytes per bin: 630 bytes per stream
    for the packaged three-sensor model, half of a stream's whole footprint, issue 22)."""
    b = (bins,)
    return {
        "surprise.dmu": Column(b, np.float64, 0.0),  # level per bin, scaled units
        "surprise.dvx": Column(b, np.float64, FIRST_VAR),  # spread about it per bin
        "surprise.dn": Column((bins,), np.uint8, 0.0, exact=True),  # readings a bin has learned, up to WARM
        "surprise.dey": Column((), np.float64, 0.0),  # EWMA of the standardised distance to the bin's level
        "surprise.dvy": Column((), np.float64, 1.0),  # running mean of mean(dey²)
        "surprise.t0": Column((), np.float64, np.nan, exact=True),  # the stream's first event time
    }


def _flat(cols: dict[str, np.ndarray], key: str) -> np.ndarray:
    """`cols[key]` as a flat view that writes go through (made contiguous first if it is not: then a
    reshape would copy, and the writes would be lost)."""
    a = cols[key]
    if not a.flags.c_contiguous:
        a = cols[key] = np.ascontiguousarray(a)
    return a.reshape(-1)


class Daily:
    """One round's time-of-day statistic [B] (0 where the reading's bin has not learned its level yet), and
    the bins' learning."""

    def __init__(
        self,
        bins: int,
        features: int,
        horizon_s: float,
        keep: float,
        a: float,
        bound: float,
        clip2: float,
        max_rate: float,
    ) -> None:
        self.bins, self._features = bins, f64(features)
        self._rows: dict[int, np.ndarray] = {}  # B → the first flat index of each row (rows × bins)
        # Operands as 0-d arrays (npfast.f64): a Python scalar costs ~1,600 instructions more per ufunc call.
        self._bin_s, self._last_bin = f64(DAY_S / bins), np.intp(bins - 1)
        self._bin_horizon = f64(horizon_s / bins)  # a bin sees 1/bins of the readings: it learns bins × faster
        self._keep, self._a, self._lo, self._hi = f64(keep), f64(a), f64(-bound), f64(bound)
        self._clip2, self._max_rate = f64(clip2), f64(max_rate)

    def _offsets(self, b: int) -> np.ndarray:
        """[b] each row's first flat index (row × bins), made once per round size."""
        out = self._rows.get(b)
        if out is None:
            out = self._rows[b] = np.arange(b, dtype=np.intp) * self.bins
        return out

    def statistic(
        self,
        cols: dict[str, np.ndarray],
        u: np.ndarray,
        ts: np.ndarray,
        gap: np.ndarray,
        rate: np.ndarray,
        learning: np.ndarray,
        steady: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The statistic [B] and where it speaks [B] (its bin learned, the stream past its first day).
        `u` [B, F] scaled readings (their mean is profiled) at event times `ts`, `gap` s after their stream's
        previous reading; `rate` the stream's forgetting rate per reading (a running mean's while `learning`
        its baseline; `steady`: no stream of the round is)."""
        # Each stream's bin as a flat index into its [B, bins] columns (`take` and a flat store: cheaper
        # than a 2-d fancy index); a non-finite time (never from the daemon's decoder) lands in bin 0.
        h = (ts % _DAY // self._bin_s).astype(np.intp)
        at = self._offsets(len(ts)) + np.maximum(np.minimum(h, self._last_bin), _I0)
        mu_flat, vx_flat, n_flat = _flat(cols, "surprise.dmu"), _flat(cols, "surprise.dvx"), _flat(cols, "surprise.dn")
        mu, vx, n = mu_flat.take(at), vx_flat.take(at), n_flat.take(at)
        x = np.add.reduce(u, axis=1) / self._features  # the features' mean, scaled units
        d = x - mu
        t0 = cols["surprise.t0"]
        # A stream's first reading sets its first time; so does the first reading after an upgrade or a
        # model reload that added the column (its row then starts from the column's init, NaN), whatever
        # the stream's age: not only while some stream of the round learns its baseline.
        new = np.isnan(t0)
        if count_nonzero(new):
            t0 = np.where(new, ts, t0)
            cols["surprise.t0"] = t0
        # "What this hour usually brings" needs this hour seen on an earlier day: nothing is compared in a
        # stream's first day (a 1 Hz machine's warm-up within the hour is not a daily pattern).
        learned = (n >= _LEARNED) & (ts - t0 >= _DAY)
        every = count_nonzero(learned) == learned.size  # the steady state: fewer where()s, the same numbers
        e_old = cols["surprise.dey"]
        z = d / np.sqrt(vx)
        e = self._keep * e_old + self._a * np.minimum(np.maximum(self._lo, z), self._hi)
        vy = cols["surprise.dvy"]
        ms = e * e if every else np.where(learned, e * e, _ZERO)
        w = ms / vy
        if not every:
            e = np.where(learned, e, e_old)  # a bin that knows nothing yet says nothing
            ms = e * e
        # The running mean of ē² learns from the readings whose bin is learned, at the stream's rate.
        step = rate if every else np.where(learned, rate, _ZERO)
        bounded = np.minimum(ms, self._clip2 * vy)
        if not steady:
            bounded = np.where(learning, ms, bounded)
        cols["surprise.dvy"] = np.maximum(vy + step * (bounded - vy), _TINY)
        cols["surprise.dey"] = e
        # The bin learns the reading: a running mean for its first WARM readings, then with forgetting by
        # event time at bins × the stream's rate (the bin sees 1/bins of the stream's readings).
        r = np.fmin(np.fmax(gap / self._bin_horizon, _ZERO), self._max_rate)  # NaN, -0 → 0; +inf → max
        dd = d * d
        d2 = np.minimum(dd, self._clip2 * vx)
        warm = n < _WARM
        if count_nonzero(warm):
            nf = n.astype(np.float64)
            r = np.where(warm, _ONE / (nf + _ONE), r)
            d2 = np.where(warm, dd, d2)
            first = n == _N0
            mu_flat[at] = np.where(first, x, mu + r * d)
            vx_flat[at] = np.where(first, _FIRST_VAR, np.maximum(vx + r * (d2 - vx), _TINY))
            n_flat[at] = np.minimum(n + _N1, _WARM)
        else:
            mu_flat[at] = mu + r * d
            vx_flat[at] = np.maximum(vx + r * (d2 - vx), _TINY)
        return w, learned
