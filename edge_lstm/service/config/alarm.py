"""`[alarm]`: alarm hysteresis per stream (edge_lstm/alarm.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ...alarm import AlarmPolicy
from .base import Section

__all__ = ["AlarmSettings"]

_ALARM = AlarmPolicy()


class AlarmSettings(Section):
    """Raise after `raise_n` of the last `raise_window` readings are flagged, clear after `clear_after`
    consecutive quiet readings (unflagged, likelihood at most `clear_likelihood`)."""

    raise_n: int = Field(
        default=_ALARM.raise_n,
        ge=1,
        description="an alarm is raised when `raise_n` of the last `raise_window` readings are flagged…",
    )
    # A window is one 64-bit word of flags (alarm.py).
    raise_window: int = Field(default=_ALARM.raise_window, ge=1, le=62, description="…readings")
    clear_after: int = Field(
        default=_ALARM.clear_after, ge=1, description="…and cleared after this many quiet readings in a row…"
    )
    clear_likelihood: float = Field(
        default=_ALARM.clear_likelihood,
        gt=0,
        le=1,
        description="…quiet: unflagged and `likelihood` at most this (`1`: any unflagged reading)",
    )

    raise_surprise: float = Field(
        default=_ALARM.raise_surprise,
        ge=0,
        description="…or at once by one flagged reading with `surprise` at least this (4: rarer than 1e-4 "
        "under the stream's own law; a spike is one reading; 0 = off)",
    )

    latch: bool = Field(
        default=_ALARM.latch,
        description="a raised alarm stays raised until the `accept` command clears it (never on its own)",
    )

    @model_validator(mode="after")
    def _n_in_window(self) -> AlarmSettings:
        if self.raise_n > self.raise_window:
            raise ValueError(f"raise_n ({self.raise_n}) must be <= raise_window ({self.raise_window})")
        return self

    def policy(self) -> AlarmPolicy:
        return AlarmPolicy(
            self.raise_n, self.raise_window, self.clear_after, self.clear_likelihood, self.raise_surprise, self.latch
        )
