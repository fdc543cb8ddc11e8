"""The scoring settings, shared by every channel (the `[scoring]` section of the daemon's configuration,
README "Configuration"; defaults measured in docs/quality.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .stats import TailPrior, chi2k_quantile


@dataclass(frozen=True)
class ScoringConfig:
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
    # nearest known state, each smoothed on its own (`Deviation._known`).
    known_states: bool = True

    # A reading more than this after its stream's previous one is not scored against it by the
    # deviation channel (a sensor offline for an hour): it only re-anchors the stream. 0 = never.
    max_gap_s: float = 600.0
    # Carry the forecast score's calibrated threshold (extrapolate(), docs/scoring.md) to 1 − `risk`
    # ("risk": every channel at the same per-reading risk), to the level the calibration asked for
    # ("quantile": only corrects the maximum of a few held-out scores), or use it as calibrated ("off").
    extrapolate: Literal["quantile", "risk", "off"] = "risk"
    # A feature repeating exactly the same value for more than max(stuck_after, 4 × its longest run in
    # the baseline) readings is stuck (channels/stuck.py) and flags the reading. 0 = off.
    stuck_after: int = 60
    # The surprise channel (channels/surprise.py): its statistics forget with this time constant, event
    # seconds (a new normal is learned within about one horizon; a 1 Hz fault stays surprising for days);
    # the EWMA span of its smoothed statistics, readings; a reading beyond the stream's range so far by
    # more than `range_margin` of that range has p = `range_p` (range_margin 0: off).
    horizon_s: float = 604_800.0
    surprise_span: int = 10
    range_margin: float = 0.05
    range_p: float = 1e-6
    # What `anomaly` is: "channels", any channel over its own threshold (forecast score, deviation, bias,
    # stuck, and the surprise channel: SKAB's faults stay flagged, a lasting change flags for ever);
    # "likelihood", the calibrated likelihood against `risk` (and stuck; the forecast score while a stream
    # learns): adapts to a new normal within the horizon (NAB), but a 1 Hz machine's slow drift is not
    # followed and SKAB's sustained faults are partly missed (docs/quality.md, "NAB").
    flags: Literal["channels", "likelihood", "adaptive"] = "adaptive"
    # "adaptive": a channel's flag stands only while the surprise channel's p-value is below this.
    surprise_gate: float = 1e-2
    # The surprise channel's level statistic is the smaller of the stream's own and its smoothed distance
    # to the nearest known normal state of the model's calibration data (the deviation channel's).
    surprise_known: bool = True
    # "adaptive", while the stream's alarm is raised: the gate's level instead of `surprise_gate` (0: the
    # same gate). A gate harder to open than to keep open (hysteresis, like the alarm's two-level clear):
    # a fault's flags stand while it stays somewhat unusual, a lasting change still stops flagging once
    # the stream's law has learned it (docs/quality.md, "The gate's hysteresis").
    surprise_gate_raised: float = 0.1
    # The surprise channel's time-of-day statistic: each stream's level and spread per 1/`daily_bins` of the
    # (UTC) day, learned over `horizon_s`; a reading far from what that hour usually brings is surprising even
    # where the forecast follows it (a daily pattern that breaks). 0 = off. 9 bytes per bin and stream
    # (12 two-hour bins: 108 bytes, and 24 for the statistic; docs/quality.md, "Time of day").
    daily_bins: int = 12

    def __post_init__(self) -> None:
        self._check_channels()
        self._check_thresholds()
        if not self.horizon_s > 0:
            raise ValueError(f"scoring.horizon_s must be > 0 seconds, got {self.horizon_s}")
        if not (0 <= self.daily_bins <= 96 and (self.daily_bins == 0 or 86_400 % self.daily_bins == 0)):
            raise ValueError(
                f"scoring.daily_bins must be 0 (off) or divide the day's 86400 s, at most 96, got {self.daily_bins}"
            )
        if self.surprise_span < 1:
            raise ValueError(f"scoring.surprise_span must be >= 1 readings, got {self.surprise_span}")
        if not (self.range_margin >= 0 and 0 < self.range_p < 1):
            raise ValueError(
                f"scoring.range_margin must be >= 0 and range_p in (0, 1), got {self.range_margin}, {self.range_p}"
            )
        if not 0 < self.surprise_gate < 1:
            raise ValueError(f"scoring.surprise_gate must be in (0, 1), got {self.surprise_gate}")
        if self.surprise_gate_raised != 0 and not self.surprise_gate <= self.surprise_gate_raised < 1:
            raise ValueError(
                f"scoring.surprise_gate_raised must be 0 or in [surprise_gate, 1), got {self.surprise_gate_raised}"
            )
        if self.stuck_after < 0:
            raise ValueError(f"scoring.stuck_after must be >= 0 readings (0 = off), got {self.stuck_after}")

    def _check_channels(self) -> None:
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

    def _check_thresholds(self) -> None:
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
        return chi2k_quantile(p, self.dof(features))

    def tail_prior_law(self, features: int) -> TailPrior:
        """The prior law's tail above its (1 − tail_level) quantile, as a POT prior (stats.py)."""
        u = self.quantile(features, 1.0 - self.tail_level)
        return TailPrior.through(u, self.tail_level, self.threshold(features), self.risk, self.tail_prior)
