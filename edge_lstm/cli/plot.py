"""`edge-lstm replay --plot out.png`: one picture of a replayed stream (needs the `[plot]` extra).

Panels, sharing the time axis: each feature's values with the model's predictions of them; the forecast
`score` with its `threshold`; the `deviation` with its threshold; the `bias` with its threshold (forecast
models). Flagged readings are marked, and the
spans while the stream's alarm was raised are shaded on every panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from ..result import Result


class PlotUnavailable(Exception):
    pass


@dataclass
class Trace:
    """What the plot needs of one stream, collected while replaying."""

    ts: list[float] = field(default_factory=list)
    values: list[Sequence[float]] = field(default_factory=list)
    predicted: list[Sequence[float] | None] = field(default_factory=list)  # the forecast made for this reading
    score: list[float] = field(default_factory=list)
    threshold: list[float | None] = field(default_factory=list)
    deviation: list[float | None] = field(default_factory=list)
    deviation_threshold: list[float | None] = field(default_factory=list)
    bias: list[float | None] = field(default_factory=list)
    bias_threshold: list[float | None] = field(default_factory=list)
    anomaly: list[bool] = field(default_factory=list)
    alarm: list[bool] = field(default_factory=list)
    _next: Sequence[float] | None = None

    def add(self, r: Result, values: Sequence[float]) -> None:
        self.ts.append(r.ts)
        self.values.append(values)
        self.predicted.append(self._next)
        self._next = r.prediction
        self.score.append(r.score)
        self.threshold.append(r.threshold)
        self.deviation.append(r.deviation)
        self.deviation_threshold.append(r.deviation_threshold)
        self.bias.append(r.bias)
        self.bias_threshold.append(r.bias_threshold)
        self.anomaly.append(r.anomaly)
        self.alarm.append(r.alarm)


def plot(trace: Trace, names: Sequence[str], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'edge-lstm[plot]'") from None
    from datetime import datetime

    t = [datetime.fromtimestamp(x, UTC) for x in trace.ts]
    n = len(names)
    panels = n + 2 + any(b is not None for b in trace.bias)
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(11, 2.0 * panels), squeeze=False)
    ax = [a[0] for a in axes]
    for k, name in enumerate(names):
        ax[k].plot(t, [v[k] for v in trace.values], lw=0.8, label=name)
        pred = [p[k] if p is not None and k < len(p) else math.nan for p in trace.predicted]
        if any(not math.isnan(p) for p in pred):
            ax[k].plot(t, pred, lw=0.8, alpha=0.7, label="prediction")
        ax[k].set_ylabel(name)
        ax[k].legend(loc="upper right", fontsize="small")
    s_ax, d_ax = ax[n], ax[n + 1]
    s_ax.plot(t, trace.score, lw=0.8, label="score")
    s_ax.plot(t, [x if x is not None else math.nan for x in trace.threshold], "r--", lw=0.8, label="threshold")
    d_ax.plot(t, [x if x is not None else math.nan for x in trace.deviation], lw=0.8, label="deviation")
    d_ax.plot(t, [x if x is not None else math.nan for x in trace.deviation_threshold], "r--", lw=0.8,
              label="deviation threshold")  # fmt: skip
    flagged = [i for i, a in enumerate(trace.anomaly) if a]
    s_ax.plot([t[i] for i in flagged], [trace.score[i] for i in flagged], "r.", ms=3, label="anomaly")
    dev_flagged = [i for i in flagged if trace.deviation[i] is not None]
    d_ax.plot([t[i] for i in dev_flagged], [trace.deviation[i] for i in dev_flagged], "r.", ms=3, label="anomaly")
    s_ax.set_ylabel("score")
    d_ax.set_ylabel("deviation")
    d_ax.set_yscale("symlog")
    channels = [s_ax, d_ax]
    if panels > n + 2:
        b_ax = ax[n + 2]
        b_ax.plot(t, [x if x is not None else math.nan for x in trace.bias], lw=0.8, label="bias")
        b_ax.plot(t, [x if x is not None else math.nan for x in trace.bias_threshold], "r--", lw=0.8,
                  label="bias threshold")  # fmt: skip
        b_flagged = [i for i in flagged if trace.bias[i] is not None]
        b_ax.plot([t[i] for i in b_flagged], [trace.bias[i] for i in b_flagged], "r.", ms=3, label="anomaly")
        b_ax.set_ylabel("bias")
        b_ax.set_yscale("symlog")
        channels.append(b_ax)
    for a in channels:
        a.legend(loc="upper right", fontsize="small")
    for start, end in _spans(trace.alarm):
        for a in ax:
            a.axvspan(t[start], t[end - 1], color="red", alpha=0.12, lw=0)
    ax[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _spans(on: list[bool]) -> list[tuple[int, int]]:
    out, start = [], None
    for i, x in enumerate([*on, False]):
        if x and start is None:
            start = i
        elif not x and start is not None:
            out.append((start, i))
            start = None
    return out
