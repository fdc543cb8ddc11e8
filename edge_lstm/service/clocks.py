"""Daemon time on a Pi without a real-time clock: arrival stamps that never go backwards.

A reading without `ts` is stamped with its arrival time, read from the wall clock by the network thread.
The wall clock steps: back when NTP corrects a clock that ran fast (or an operator sets it), forward when
NTP first syncs a Pi that booted without an RTC. Stamped from the raw wall clock, readings after a
backward step would be older than the ones before it: `out_of_order`, and their streams stalled until the
clock caught up again. `ArrivalStamps` keeps them increasing:

- once per batch it compares the wall clock's progress with the monotonic clock's; a wall clock that
  fell behind by more than `step_s` has stepped back, and the step is added to every later stamp
  (`skew`); a later forward step (NTP catching up) takes it back off, never below zero;
- within the batch, a stamp that would not be newer than the previous one is set just after it.

So stamps run at real speed through a backward step, and forward steps are followed (they are usually
the clock becoming right).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..ports import Clock, Inbound
from ..reading import Decoder, FutureGuard
from ..state import StateTable
from .config import EngineSettings
from .contain import last_ts_lookup

TICK = 1e-6  # a stamp that would not increase is set this far after the previous one


class ArrivalStamps:
    step_s = 1.0  # wall vs monotonic disagreement taken as a step (NTP slews smaller errors)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._wall, self._mono = clock.time(), clock.monotonic()
        self.skew = 0.0  # seconds added to arrival stamps since the wall clock stepped back
        self.last = self._wall

    def adjust(self, batch: Sequence[Inbound]) -> None:
        """Correct the batch's arrival stamps in place (call before decoding it)."""
        wall, mono = self.clock.time(), self.clock.monotonic()
        drift = wall - (self._wall + (mono - self._mono))
        self._wall, self._mono = wall, mono
        if drift < -self.step_s:
            self.skew -= drift
        elif drift > self.step_s:
            self.skew = max(0.0, self.skew - drift)
        skew, last = self.skew, self.last
        for m in batch:
            a = m.arrival + skew
            if a <= last:
                a = last + TICK
            m.arrival = last = a
        self.last = last


def decoder_for(features: Sequence[str], eng: EngineSettings, table: StateTable) -> Decoder:
    """The daemon's decoder, with the clock rule for readings ahead of its clock (reading.FutureGuard)
    judged against the streams' last readings in `table`."""
    guard = FutureGuard(eng.max_future_s, last_ts_lookup(table), max_streams=eng.max_streams)
    return Decoder(features, max_payload_bytes=eng.max_payload_bytes, max_future_s=eng.max_future_s, future_guard=guard)
