"""Scoring: every registered channel (channels/, docs/architecture.md) over a round of streams, combined.

A reading is an `anomaly` when any channel flags it. Each channel fills its own `Result` fields; the
alarm (alarm.py) takes the `score` and `likelihood` signals. The exporter's calibration runs through this
same code, so the daemon and the calibration cannot disagree about what a score is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..contract import ModelMeta
from ..npfast import count_nonzero, f64
from ..result import FIELD_NAMES
from ..state import Column
from . import channels as registry
from .channel import Batch, Channel, ChannelType, Lazy
from .channels.deviation import Deviation
from .channels.forecast import ForecastScore, output_scaling
from .config import ScoringConfig

_I0 = np.array(0, np.int64)

# Channels whose thresholds do not adapt: they flag only with `scoring.flags = "channels"`.
LEGACY = frozenset({"score", "deviation", "bias"})


@dataclass
class Scored:
    """One round's scoring output, one entry per stream of the round."""

    flags: np.ndarray  # [B] bool: some channel flags the reading
    fields: dict[str, list[Any]]  # Result keyword → one value per reading (every channel's fields)
    signals: dict[str, np.ndarray]  # named [B] statistics: "score", "likelihood" (the alarm's inputs)
    lazy: dict[str, Lazy] = field(default_factory=dict)  # named statistics computed when called (`likelihood`)

    def shifted(self, cleared: np.ndarray) -> np.ndarray | None:
        """The surprise channel's `shifted` for the cleared alarms' reasons: computed now if deferred and some
        alarm cleared (its only use), else None when deferred."""
        signal = self.signals.get("shifted")
        if signal is not None:
            return signal
        deferred = self.lazy.get("shifted")
        return deferred() if deferred is not None and count_nonzero(cleared) else None

    def likelihood(self) -> np.ndarray | Lazy | None:
        """The alarm's quiet-test input: the signal, else the deferred one (a function), else None."""
        signal = self.signals.get("likelihood")
        return signal if signal is not None else self.lazy.get("likelihood")


class Scorer:
    """The model's channels: those of `channels.REGISTRY` (or of `channels`) that apply to it, built once
    per model; `columns` are all their state columns."""

    def __init__(
        self, meta: ModelMeta, config: ScoringConfig | None = None, channels: Sequence[ChannelType] | None = None
    ) -> None:
        self.config = config or ScoringConfig()
        self.kinds = list(registry.REGISTRY if channels is None else channels)
        built = [kind.build(meta, self.config) for kind in self.kinds]
        self.channels: list[Channel] = [c for c in built if c is not None]
        self.columns: dict[str, Column] = {}
        for channel in self.channels:
            for key, column in channel.columns.items():
                if not key.startswith(channel.name + ".") or key in self.columns:
                    raise ValueError(f"channel {channel.name!r}: column {key!r} must be new and named {channel.name}.*")
                self.columns[key] = column
        for k, channel in enumerate(self.channels):
            if isinstance(channel, Deviation) and any("likelihood" in c.fields for c in self.channels[k + 1 :]):
                channel.publish_likelihood = False  # its field is overwritten: its likelihood is deferred
        self.extra_fields = tuple(
            f for c in self.channels for f in c.fields if f not in FIELD_NAMES
        )  # published in Result.extra
        if meta.output.kind == "forecast":
            _, self.out_offset, self.out_scale = output_scaling(meta)
        # score()'s and _combine()'s settings as 0-d arrays (npfast.f64: a Python scalar operand costs a ufunc
        # call ~1,600 instructions more; the same values).
        c = self.config
        self._max_gap, self._baseline = f64(c.max_gap_s), np.array(c.baseline, np.int64)
        self._gate, self._gate_raised = f64(1.0 - c.surprise_gate), f64(1.0 - c.surprise_gate_raised)

    def channel(self, name: str) -> Channel | None:
        """The model's channel called `name` (None: not registered or not applicable)."""
        return next((c for c in self.channels if c.name == name), None)

    @property
    def threshold(self) -> float | None:
        """The score channel's calibrated threshold (None: nothing flags on the score)."""
        score = self.channel("score")
        return score.threshold_value if isinstance(score, ForecastScore) else None

    def unscale(self, y: np.ndarray) -> np.ndarray:
        """Forecast outputs (scaled) → predictions in feature units."""
        out: np.ndarray = y.astype(np.float64) * self.out_scale + self.out_offset
        return out

    def score(
        self,
        cols: dict[str, np.ndarray],
        values: np.ndarray,
        u: np.ndarray,
        y: np.ndarray,
        predicted: np.ndarray | None,
        steps: np.ndarray,
        warming: np.ndarray,
        gap: np.ndarray,
        ts: np.ndarray,
    ) -> Scored:
        """Score one round: `values` (feature units) and `u` (scaled) of streams that have seen `steps`
        readings before, `y` the model's output for them, `predicted` the forecasts made at their previous
        reading (forecast models), `warming` the model's state is not warm yet, `gap` the seconds since
        their previous reading, `ts` their event times. `cols` are the streams' columns, updated in place."""
        max_gap = self.config.max_gap_s
        restart = (gap > self._max_gap) & (steps > _I0) if max_gap > 0 else np.zeros(len(steps), bool)
        out = Scored(np.zeros(len(steps), bool), {}, {})
        ready = steps >= self._baseline
        batch = Batch(cols, values, u, y, predicted, steps, warming, ready, restart, gap, ts, out.signals)
        flagged: dict[str, np.ndarray] = {}
        for channel in self.channels:
            scores = channel.update(batch)
            flagged[channel.name] = scores.flags
            out.fields.update(scores.fields)
            out.signals.update(scores.signals)
            out.lazy.update(scores.lazy)
        out.flags = self._combine(flagged, out.signals, batch.ready, cols, out.lazy)
        return out

    def _combine(
        self,
        flagged: dict[str, np.ndarray],
        signals: dict[str, np.ndarray],
        ready: np.ndarray,
        cols: Mapping[str, np.ndarray],
        lazy: dict[str, Lazy],
    ) -> np.ndarray:
        """`anomaly` from the channels' flags, by `scoring.flags` (docs/scoring.md, "The flag")."""
        mode = self.config.flags
        flags = np.zeros(len(ready), bool)
        legacy = np.zeros(len(ready), bool)
        for name, f in flagged.items():
            if name in LEGACY:
                legacy |= f
            elif name != "surprise" or mode == "likelihood":
                flags |= f  # stuck, and any channel without a threshold of its own kind
        calibrated = signals.get("calibrated")
        if mode == "channels" or calibrated is None:
            flags |= legacy
            return flags
        if mode == "likelihood":
            signals["likelihood"] = calibrated  # the alarm's quiet test, as the flag
            lazy.pop("likelihood", None)
            # Until the stream has learned its own law, the model's calibration judges its forecasts.
            flags |= flagged.get("score", flags) & ~ready
            return flags
        # "adaptive": a channel's flag stands while the stream's own recent law finds the reading surprising
        # too; until that law is learned, the channels alone.
        surprising = calibrated >= self._gate  # 1 - surprise_gate
        if "likelihood" in signals:  # the alarm's quiet test: back in the body of either law
            signals["likelihood"] = np.minimum(signals["likelihood"], calibrated)
        elif "likelihood" in lazy:  # the same, when the alarm asks for it
            own = lazy["likelihood"]
            lazy["likelihood"] = lambda: np.minimum(own(), calibrated)
        hold = self.config.surprise_gate_raised
        if hold > 0 and "alarm.raised" in cols:  # no alarm column: calibration
            # Hysteresis: a raised alarm's stream keeps its channels' flags while the reading stays unusual.
            raised = cols["alarm.raised"]
            if count_nonzero(raised):
                surprising = surprising | (raised & (calibrated >= self._gate_raised))  # 1 - hold
        flags |= legacy & (surprising | ~ready)
        return flags

    def describe(self, cols: Mapping[str, np.ndarray], ready: bool) -> dict[str, object]:
        """Every channel's `inspect` entries for one stream's row; None for those of absent channels."""
        out: dict[str, object] = {}
        for kind in self.kinds:
            channel = self.channel(kind.name)
            out.update(channel.describe(cols, ready) if channel is not None else dict.fromkeys(kind.fields))
        return out

    def adopt(self, previous: Scorer, columns: dict[str, np.ndarray]) -> None:
        """A model reload keeps every stream's row: let each channel fix up what means something else now."""
        for channel in self.channels:
            old = previous.channel(channel.name)
            if old is not None:
                channel.adopt(old, columns)
