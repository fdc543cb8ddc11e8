"""The stuck channel: a feature that repeats exactly the same value for far longer than it ever did while
its stream learned its baseline (docs/scoring.md, "Stuck sensors").

A frozen sensor (or a gateway that re-sends its last value) is one of the commonest sensor faults and
neither scoring channel sees it: the forecaster and the AR(1) deviation both predict "the same as
before" for a smooth feature, and a repeated value *is* the prediction. What does show is the run of
identical values. Quantised sensors repeat normally (SKAB's flow rate and pressure: runs of up to 37
readings in their first 300), so the limit is each feature's own longest run in the baseline, times
`RUN_FACTOR`, and never below `stuck_after` readings:

    stuck_i  when  run_i > max(stuck_after, RUN_FACTOR × longest_baseline_run_i)

A feature that never changed during the baseline (a constant channel, a setpoint) is constant by
nature and is never called stuck. Pure array functions over a round of streams; three per-feature
columns per stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...contract import ModelMeta
from ...npfast import count_nonzero, i64
from ...state import Column, read_only
from ..channel import BaseChannel, Batch, Scores
from ..config import ScoringConfig

# The longest of ~300 geometric-like runs is already a far-tail sample: 4× it is not reached by the
# quantised SKAB sensors in any of 35 files (longest test run 27, limits ≥ 60: docs/quality.md).
RUN_FACTOR = 4
UNKNOWN = -1  # stuck.longest of a stream restored from a checkpoint written before this column existed


def columns(features: int) -> dict[str, Column]:
    f = (features,)
    return {
        "stuck.last": Column(f, np.float64, np.nan, exact=True),  # the previous reading (compared: exact)
        "stuck.run": Column(f, np.int64, 0),  # readings in the current run of identical values
        "stuck.longest": Column(f, np.int64, UNKNOWN),  # longest run during the baseline
    }


def update(
    cols: dict[str, np.ndarray],
    values: np.ndarray,
    steps: np.ndarray,
    baseline: int,
    stuck_after: int,
) -> np.ndarray:
    """One reading per stream (`values` [B, F], feature units; `steps` readings seen before it). Updates
    `cols` in place and returns [B, F]: which features are stuck at this reading (all False when
    `stuck_after` is 0)."""
    # Integer operands as 0-d int64 arrays (npfast.i64: a Python int costs a ufunc call ~1,600 instructions
    # more; the same values).
    one, base = i64(1), i64(baseline)
    same = values == cols["stuck.last"]  # NaN (a stream's first reading) compares unequal
    run = cols["stuck.run"] * same + one  # + 1 where the same, else 1 (integers: where()'s values, cheaper)
    cols["stuck.run"] = run
    cols["stuck.last"] = values
    learning = (steps < base)[:, None]
    # Past every stream's baseline (the steady state) the longest runs are neither updated nor written back.
    some_learning = count_nonzero(learning) > 0
    if some_learning:
        cols["stuck.longest"] = np.where(learning, np.maximum(cols["stuck.longest"], run), cols["stuck.longest"])
    longest = cols["stuck.longest"] if some_learning else read_only(cols, "stuck.longest")
    if stuck_after <= 0:
        return np.zeros(values.shape, dtype=bool)
    # Judged only after the baseline, on features that changed at least once in it (longest < baseline)
    # and whose baseline is known (not UNKNOWN).
    judged = (longest > i64(0)) & (longest < base)
    if some_learning:
        judged &= ~learning
    out: np.ndarray = judged & (run > np.maximum(i64(stuck_after), i64(RUN_FACTOR) * longest))
    return out


class Stuck(BaseChannel):
    """stuck: features repeating exactly one value for far longer than they did in the stream's
    baseline (a frozen sensor, a gateway re-sending its last value); published as the stuck features'
    names."""

    name: ClassVar[str] = "stuck"
    fields: ClassVar[tuple[str, ...]] = ("stuck",)

    @classmethod
    def build(cls, meta: ModelMeta, config: ScoringConfig) -> Stuck:
        return cls(tuple(meta.features), config)

    def __init__(self, features: tuple[str, ...], config: ScoringConfig) -> None:
        self.features = features
        self.config = config
        self.columns = columns(len(features))

    def threshold(self, cols: Mapping[str, np.ndarray]) -> np.ndarray:
        """[..., F]: the run length above which each feature is stuck, as it stands."""
        out: np.ndarray = np.maximum(self.config.stuck_after, RUN_FACTOR * cols["stuck.longest"])
        return out

    def update(self, batch: Batch) -> Scores:
        stuck = update(batch.cols, batch.values, batch.steps, self.config.baseline, self.config.stuck_after)
        names: list[tuple[str, ...]] = [()] * len(stuck)
        if not count_nonzero(stuck):  # the common case: no reduction, no loop
            return Scores(np.zeros(len(stuck), bool), {"stuck": names})
        flags: np.ndarray = np.asarray(stuck.any(axis=1))
        for m in np.flatnonzero(flags).tolist():
            names[m] = tuple(self.features[i] for i in np.flatnonzero(stuck[m]).tolist())
        return Scores(flags, {"stuck": names})
