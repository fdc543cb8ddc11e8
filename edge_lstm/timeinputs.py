"""Time inputs: the phase of a reading's timestamp in a day and a week, as model input columns.

A model that declares `time_inputs` (docs/model-format.md) gets, after its scaled features, sin and cos
of 2π·ts/period for each: the daemon, `edge-lstm replay` and `fit` compute them from the same `ts` by this
one function, so training and service cannot disagree. UTC epoch seconds: a local daily cycle is the same
cycle at a fixed phase, which the model learns (daylight-saving shifts it by an hour twice a year).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .contract import TIME_PERIODS_S


def time_columns(ts: np.ndarray, inputs: Sequence[str]) -> np.ndarray:
    """`[len(ts), 2 * len(inputs)]`: sin, cos of each reading's phase per period, in `inputs` order."""
    cols = []
    for name in inputs:
        # The remainder first: epoch seconds (1.7e9) times 2π/period in float64 keeps ~1e-7 rad anyway,
        # but the remainder keeps the phase exact to the float64 ts.
        phase = (2.0 * np.pi / TIME_PERIODS_S[name]) * np.mod(ts, TIME_PERIODS_S[name])
        cols += [np.sin(phase), np.cos(phase)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(ts), 0))
