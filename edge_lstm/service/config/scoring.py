"""`[scoring]`: per-stream scoring (docs/scoring.md). Defaults are `ScoringConfig`'s: one source, so
that `replay` and `evaluate` score as the daemon does."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...scoring import ScoringConfig
from .base import Section

__all__ = ["ScoringSettings"]

_SCORING = ScoringConfig()


class ScoringSettings(Section):
    baseline: int = Field(
        default=_SCORING.baseline,
        ge=3,
        description="readings each stream learns its own normal operation from; no `deviation` before "
        "([docs/scoring.md](docs/scoring.md))",
    )
    span: int = Field(default=_SCORING.span, ge=1, description="EWMA span of the deviation, readings")
    risk: float = Field(
        default=_SCORING.risk,
        gt=0,
        lt=0.5,
        description="per-reading probability that normal operation crosses `deviation_threshold`",
    )
    inflate: float = Field(
        default=_SCORING.inflate,
        ge=1,
        description="variance of the smoothed deviation relative to independent readings (sensor "
        "autocorrelation), a ratio",
    )
    track: float = Field(
        default=_SCORING.track,
        ge=0,
        description="readings: after the baseline, a stream's level follows slow drift with this time constant "
        "(a fault's readings barely move it); 0 = fixed",
    )
    influence: float = Field(
        default=_SCORING.influence,
        ge=0,
        description="one reading counts into the smoothed `deviation` up to this many times the stream's "
        "threshold, so a single spike does not raise an alarm (its reading is still flagged by the forecast "
        "channel); 0 = no bound",
    )
    threshold: Literal["pot", "chi2"] = Field(
        default=_SCORING.threshold_method,
        description="`deviation_threshold`: `pot` fits each stream's own tail (peaks over threshold) over its "
        "first `scoring.tail_window` readings after the baseline, with the χ² law as the prior; `chi2`: the "
        "prior law alone, the same for every stream ([docs/scoring.md](docs/scoring.md))",
    )
    tail_window: int = Field(
        default=_SCORING.tail_window,
        ge=0,
        description="readings after the baseline whose deviation is fitted for the stream's threshold (then frozen)",
    )
    extrapolate: Literal["quantile", "risk", "off"] = Field(
        default=_SCORING.extrapolate,
        description="the forecast `threshold`: the calibrated one carried to 1 − `scoring.risk` (`risk`: every "
        "channel at the same risk), to the quantile the calibration asked for (`quantile`: only corrects the "
        "maximum of a few held-out scores), or as calibrated (`off`)",
    )
    max_gap_s: float = Field(
        default=_SCORING.max_gap_s,
        ge=0,
        description="a reading this long after its stream's previous one only re-anchors the deviation, "
        "seconds (0 = never)",
    )
    stuck_after: int = Field(
        default=_SCORING.stuck_after,
        ge=0,
        description="a feature repeating one value for more than this many readings, and 4 × its longest run "
        "during the baseline, is `stuck` and flags the reading (0 = off)",
    )
    known_states: bool = Field(
        default=_SCORING.known_states,
        description="`deviation` is also measured against the normal operating states in the model's "
        "calibration (`calibration.states`, written by `edge-lstm-export`) and is the smaller of the two "
        '([docs/scoring.md](docs/scoring.md), "Known normal states"); `false`: the stream\'s own baseline only',
    )
    horizon_s: float = Field(
        default=_SCORING.horizon_s,
        ge=60,
        le=31_536_000,
        description="seconds of event time over which each stream's `likelihood` statistics forget: a lasting "
        "change becomes the new normal within about this long, while a fault shorter than a small part of "
        'it stays surprising ([docs/scoring.md](docs/scoring.md), "Likelihood")',
    )
    surprise_span: int = Field(
        default=_SCORING.surprise_span,
        ge=1,
        le=1000,
        description="EWMA span of the smoothed `likelihood` statistics, readings",
    )
    range_margin: float = Field(
        default=_SCORING.range_margin,
        ge=0,
        le=10,
        description="a reading beyond its stream's range so far by more than this share of the range counts as "
        "rarer than `scoring.range_p` (0 = off)",
    )
    range_p: float = Field(
        default=_SCORING.range_p,
        gt=0,
        lt=1,
        description="probability given to a reading beyond its stream's range (`scoring.range_margin`)",
    )
    flags: Literal["channels", "likelihood", "adaptive"] = Field(
        default=_SCORING.flags,
        description="what `anomaly` is: `adaptive`, a channel over its threshold while the stream's own "
        "recent law (`likelihood`) also finds the reading rarer than `scoring.surprise_gate` (a new normal "
        "stops flagging within `scoring.horizon_s`); `channels`, any channel over its threshold, never "
        "adapting; `likelihood`, the calibrated `likelihood` against `scoring.risk` alone "
        '([docs/quality.md](docs/quality.md), "NAB")',
    )
    daily_bins: int = Field(
        default=_SCORING.daily_bins,
        ge=0,
        le=96,
        description="bins of the UTC day for the `likelihood`'s time-of-day statistic (each stream's level per "
        "bin of the day: a daily pattern that breaks is surprising; from a stream's second day on; 0 = off; "
        "9 bytes per bin and stream); must divide the day",
    )
    surprise_gate: float = Field(
        default=_SCORING.surprise_gate,
        gt=0,
        lt=1,
        description="`flags = adaptive`: a channel's flag stands while 1 − `likelihood` is below this",
    )
    surprise_gate_raised: float = Field(
        default=_SCORING.surprise_gate_raised,
        ge=0,
        lt=1,
        description="`flags = adaptive`, while the stream's alarm is raised: a channel's flag stands while "
        "1 − `likelihood` is below this instead (a fault keeps its flags while it lasts; at least "
        "`scoring.surprise_gate`; 0 = the same gate raised or not)",
    )

    def config(self) -> ScoringConfig:
        return ScoringConfig(
            baseline=self.baseline,
            span=self.span,
            risk=self.risk,
            inflate=self.inflate,
            track=self.track,
            influence=self.influence,
            threshold_method=self.threshold,
            tail_window=self.tail_window,
            extrapolate=self.extrapolate,
            max_gap_s=self.max_gap_s,
            stuck_after=self.stuck_after,
            known_states=self.known_states,
            horizon_s=self.horizon_s,
            surprise_span=self.surprise_span,
            range_margin=self.range_margin,
            range_p=self.range_p,
            daily_bins=self.daily_bins,
            flags=self.flags,
            surprise_gate=self.surprise_gate,
            surprise_gate_raised=self.surprise_gate_raised,
        )
