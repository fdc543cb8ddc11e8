"""Alarm events per stream: the per-reading `anomaly` flag turned into a state people can wire to a
notification, with hysteresis so that it never flaps on noise (docs/scoring.md, "Alarms").

    raised   when at least `raise_n` of the stream's last `raise_window` readings are flagged
    cleared  after `clear_after` consecutive quiet readings while raised: unflagged, and with the
             likelihood (the stream's normal law's CDF at its deviation) at most `clear_likelihood`

Two levels, as in a Schmitt trigger: a flag needs likelihood > 1 − risk, a quiet reading needs the
deviation back inside the body of the stream's law. With one level (clear_likelihood = 1), a deviation
hovering at its threshold clears and re-raises the alarm (measured in docs/quality.md).

Vectorised over a round of streams; the state is five per-stream columns of the state table, so it is
checkpointed, journal-replayed and spilled with the rest of the stream's row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .npfast import count_nonzero, f64, i64
from .state import Column

COLUMNS = {
    "alarm.history": Column((), np.int64, 0, exact=True),  # bit i: the reading i steps ago was flagged
    "alarm.raised": Column((), np.bool_, False),
    "alarm.since": Column((), np.float64, 0.0, exact=True),  # event time of the last change
    # Highest score of the episode: from its first flagged reading (the run of flags in the window that
    # raised the alarm), not from the raise; while not raised, that of the flags now in the window.
    "alarm.peak": Column((), np.float64, 0.0),
    "alarm.readings": Column((), np.int64, 0),  # readings since raised (including the one that raised it)
    "alarm.quiet": Column((), np.int64, 0),  # consecutive quiet readings while raised
}


def table_columns(scoring: Mapping[str, Column]) -> dict[str, Column]:
    """The state table's named per-stream columns, as checkpoints and spill files store them: the scoring
    channels' (`Scorer.columns`), then the alarm's (the daemon opens its spill file with them before the
    engine exists)."""
    return {**scoring, **COLUMNS}


@dataclass(frozen=True)
class AlarmPolicy:
    # Measured on SKAB (docs/quality.md): 5 of 10 never raises on isolated flags; a minute of quiet at 1 Hz.
    raise_n: int = 5
    raise_window: int = 10
    clear_after: int = 60
    # A reading counts as quiet only when its likelihood is at most this (1: any unflagged reading).
    # Measured on SKAB and anomaly-free.csv (docs/quality.md): 0.995.
    clear_likelihood: float = 0.995
    # A flagged reading this surprising (surprise = −log10 p of the stream's own law) raises the alarm on
    # its own: a spike is one reading (0: off).
    raise_surprise: float = 4.0
    # Latched: a raised alarm stays raised until a person takes the stream's state as normal (the `accept`
    # command); it never clears on its own, however normal or adapted the stream becomes.
    latch: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.raise_window <= 62:
            raise ValueError(f"alarm raise_window must be in 1..62, got {self.raise_window}")
        if not 1 <= self.raise_n <= self.raise_window:
            raise ValueError(f"alarm raise_n must be in 1..raise_window ({self.raise_window}), got {self.raise_n}")
        if self.clear_after < 1:
            raise ValueError(f"alarm clear_after must be >= 1, got {self.clear_after}")
        if not 0 < self.clear_likelihood <= 1:
            raise ValueError(f"alarm clear_likelihood must be in (0, 1], got {self.clear_likelihood}")
        if not self.raise_surprise >= 0:
            raise ValueError(f"alarm raise_surprise must be >= 0 (0 = off), got {self.raise_surprise}")

    @cached_property
    def _c(self) -> _Constants:
        """update()'s settings as 0-d arrays, made once (npfast.f64: a Python scalar operand costs a ufunc call
        ~1,600 instructions more; integer settings as int64, the same values)."""
        return _Constants(
            i64((1 << self.raise_window) - 1),
            f64(self.clear_likelihood),
            i64(self.clear_after),
            i64(self.raise_n),
            f64(self.raise_surprise),
        )

    def update(
        self,
        cols: dict[str, np.ndarray],
        flags: np.ndarray,
        scores: np.ndarray,
        ts: np.ndarray,
        likelihood: np.ndarray | Callable[[], np.ndarray] | None = None,
        surprise: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance the alarm columns (gathered for this round's streams, updated in place) by one reading
        per stream; `likelihood` (None: 0, every unflagged reading is quiet; a function: called only when a
        round gets that far) gates the quiet count. Returns the boolean masks of streams whose alarm was
        raised and cleared now."""
        was, before = cols["alarm.raised"], cols["alarm.history"]
        n_was = count_nonzero(was)  # count_nonzero: a third of ndarray.any()'s cost (here and below)
        if not (count_nonzero(flags) or count_nonzero(before) or n_was):
            # A quiet round (the steady state): no flag now, none in any stream's window, no alarm raised.
            # Every column but the peak would be written with the value it holds: the history stays 0,
            # `readings` and `since` are kept, and `quiet` is 0 already (this method leaves it 0 whenever a
            # stream's alarm is not raised, and 0 is its init). The peak is 0 now (a cleared episode's
            # peak stays until this next reading). ~25 numpy calls fewer.
            cols["alarm.peak"] = np.zeros(len(flags))
            return np.zeros(len(flags), bool), np.zeros(len(flags), bool)
        # Integers and booleans only (and a max of scores): each form below gives the same values as the
        # plain where()s it replaces, in fewer or cheaper numpy calls. For booleans a < b is ~a & b.
        c = self._c
        if callable(likelihood):  # deferred (scoring.Scored.lazy): computed now that a round needs it
            likelihood = likelihood()
        history = ((before << _I1) | flags) & c.mask  # bool → 0/1
        calm = ~flags if likelihood is None else np.less(flags, likelihood <= c.clear_likelihood)
        quiet = (cols["alarm.quiet"] + _I1) * calm  # + 1 where calm, else 0
        cleared_now = was & (quiet >= c.clear_after) if not self.latch else np.zeros(len(was), bool)
        all_raised = n_was == len(was)  # then no alarm can be raised: its tests are skipped
        raised_now = np.zeros(len(was), bool) if all_raised else self._raised(was, history, flags, surprise)
        still = was ^ cleared_now if all_raised else (was ^ cleared_now) | raised_now  # cleared_now is within was
        # A cleared alarm forgets the flags that raised it: only new flags can raise it again.
        n_cleared, n_raised = count_nonzero(cleared_now), count_nonzero(raised_now)
        cols["alarm.history"] = np.where(cleared_now, 0, history) if n_cleared else history
        cols["alarm.quiet"] = quiet * still  # kept while raised, else 0
        # While raised: readings and peak of the episode; a cleared event reports the episode's totals.
        if n_raised or n_was:  # else every `readings` stays as it is (not even gathered)
            readings = cols["alarm.readings"] + was  # + 1 while raised
            cols["alarm.readings"] = np.where(raised_now, 1, readings) if n_raised else readings
        if all_raised:  # every stream's episode goes on: its peak is carried and kept (the where()s' values)
            cols["alarm.peak"] = np.maximum(cols["alarm.peak"], scores)
        else:
            self._peak(cols, was, before, history, raised_now, scores)
        if n_raised or n_cleared:  # else every `since` stays as it is
            cols["alarm.since"] = np.where(raised_now | cleared_now, ts, cols["alarm.since"])
        cols["alarm.raised"] = still
        return raised_now, cleared_now

    def _raised(
        self, was: np.ndarray, history: np.ndarray, flags: np.ndarray, surprise: np.ndarray | None
    ) -> np.ndarray:
        """Alarms raised now: enough flags in the window, or one flagged reading this rare (a spike)."""
        c = self._c
        raised_now: np.ndarray = np.less(was, _popcount(history) >= c.raise_n)  # ~was & enough flags
        if self.raise_surprise > 0 and surprise is not None:
            raised_now |= np.less(was, flags & (surprise >= c.raise_surprise))
        return raised_now

    @staticmethod
    def _peak(
        cols: dict[str, np.ndarray],
        was: np.ndarray,
        before: np.ndarray,
        history: np.ndarray,
        raised_now: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        """The peak starts with the episode's first flagged reading, which may come up to raise_window
        readings before the raise (a spike scoring 100 then four readings scoring 5 raise at the fifth).
        Not raised: the peak of the readings since the window's oldest flag, 0 once no flag is left.
        (`history`: the window after this reading, before a clear forgets it.)"""
        carried = was | (before != _I0)
        peak = cols["alarm.peak"]
        if count_nonzero(carried) < len(carried):  # the where() only when some stream starts from 0
            peak = np.where(carried, peak, _ZERO)
        peak = np.maximum(peak, scores)
        kept = was | raised_now | (history != _I0)
        cols["alarm.peak"] = peak if count_nonzero(kept) == len(kept) else np.where(kept, peak, _ZERO)


_I0, _I1, _ZERO = i64(0), i64(1), f64(0.0)


@dataclass(frozen=True)
class _Constants:
    mask: np.ndarray  # the window's bits
    clear_likelihood: np.ndarray
    clear_after: np.ndarray
    raise_n: np.ndarray
    raise_surprise: np.ndarray


_bitwise_count = getattr(np, "bitwise_count", None)  # numpy < 2 has none


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per int64 (of x >= 0: numpy's bitwise_count counts those of |x|)."""
    if _bitwise_count is not None:  # numpy >= 2: one ufunc, 3 µs less per round than unpacking bits
        out_: np.ndarray = _bitwise_count(x)
        return out_
    bits = np.unpackbits(np.ascontiguousarray(x, dtype="<i8").view(np.uint8).reshape(-1, 8), axis=1)
    out: np.ndarray = bits.sum(axis=1)
    return out
