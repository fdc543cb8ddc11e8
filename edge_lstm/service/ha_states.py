"""What Home Assistant sees of a stream: one small retained JSON state per stream, rate-limited.

    result (every reading) ──▶ StateThrottle.offer ──▶ now: the first state, an alarm change, or the
                                                      first reading `interval_s` after the last state
                                                ──▶ later (`due`): the latest held-back state, once
                                                      `interval_s` has passed, so HA never shows a
                                                      value older than that while readings flow

The result topic keeps every reading; only Home Assistant's state topic is thinned, so a 10 Hz stream
writes HA's recorder database (often SQLite on the same SD card) once per interval, not ten times a
second. Retained, so an entity whose config HA has just processed gets the current state when it
subscribes, whatever the order in which the broker delivered config and state. Pure; the daemon
publishes what it returns.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from math import isfinite
from typing import Generic, TypeVar

from ..result import Result

T = TypeVar("T")


def _number(x: float | None) -> float | None:
    return x if x is not None and isfinite(x) else None


# What HA's state is made of: (score, likelihood, deviation, alarm, warming_up, ts). A tuple, not the
# Result, is what a held-back state keeps per stream: small, whatever the model's outputs.
HaState = tuple[float, float | None, float | None, bool, bool, float]


def snapshot(r: Result) -> HaState:
    return (r.score, r.likelihood, r.deviation, r.alarm, r.warming_up, r.ts)


def stream_state(s: HaState) -> bytes:
    """The HA state payload. `null` (HA: unknown) while the stream warms up: a score of 0.0 then would
    read as "perfectly normal" when nothing is known yet."""
    score, likelihood, deviation, alarm, warming_up, ts = s
    scored = not warming_up
    doc = {
        "score": _number(score) if scored else None,
        "likelihood": _number(likelihood) if scored else None,
        "deviation": _number(deviation) if scored else None,
        "alarm": "ON" if alarm else "OFF",
        "warming_up": warming_up,
        "ts": ts,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(slots=True)
class _Entry(Generic[T]):
    sent: float  # monotonic time of the last state sent
    alarm: bool  # the alarm state last sent
    pending: T | None = None  # the latest state held back (built into a payload only if sent)
    last: T | None = None  # the latest state offered, sent or not (what `accept` republishes)
    scheduled: bool = False  # in the due queue


class StateThrottle(Generic[T]):
    """Per stream: at most one state per `interval_s`, except alarm changes, which go at once.

    Bounded like the state table (`max_streams`, least recently offered forgotten first); a forgotten
    stream's next state goes out at once."""

    def __init__(self, interval_s: float, max_streams: int) -> None:
        self.interval_s = interval_s
        self.max_streams = max_streams
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._due: deque[tuple[float, str]] = deque()  # (due time, stream), in due-time order

    def offer(self, stream: str, alarm: bool, state: T, now: float) -> bool:
        """True: send `state` now; False: it is held back (`due` hands it out later)."""
        e = self._entries.get(stream)
        if e is None:
            self._entries[stream] = _Entry(now, alarm, last=state)
            if len(self._entries) > self.max_streams:
                self._entries.popitem(last=False)
            return True
        self._entries.move_to_end(stream)
        e.last = state
        if alarm != e.alarm or now - e.sent >= self.interval_s:
            e.sent, e.alarm, e.pending = now, alarm, None
            return True
        e.pending = state
        if not e.scheduled:
            e.scheduled = True
            self._due.append((e.sent + self.interval_s, stream))
        return False

    def due(self, now: float) -> list[tuple[str, T]]:
        """(stream, state) of held-back states whose interval has passed."""
        out: list[tuple[str, T]] = []
        while self._due and self._due[0][0] <= now:
            _, stream = self._due.popleft()
            e = self._entries.get(stream)
            if e is None or not e.scheduled:
                continue  # forgotten since
            if e.pending is not None and now < e.sent + self.interval_s:
                # Sent at once (an alarm change) since it was scheduled: wait a full interval again.
                self._due.append((e.sent + self.interval_s, stream))
                continue
            e.scheduled = False
            if e.pending is not None:
                out.append((stream, e.pending))
                e.sent, e.pending = now, None
        return out

    def latest(self, stream: str) -> T | None:
        """The latest state offered for `stream` (None: none, or forgotten)."""
        e = self._entries.get(stream)
        return None if e is None else e.last

    def replace(self, stream: str, alarm: bool, state: T) -> None:
        """`state` (sent now by the caller, outside the rate limit) is the stream's latest: a state held
        back from before it is dropped, so it cannot undo it later."""
        e = self._entries.get(stream)
        if e is not None:
            e.alarm, e.last, e.pending = alarm, state, None

    def release(self) -> None:
        """Every stream's next state goes at once, and the held-back ones are due now."""
        for stream, e in self._entries.items():
            e.sent = -math.inf
            if e.pending is not None:  # (an entry queued for later then finds it sent: skipped)
                e.scheduled = True
                self._due.appendleft((-math.inf, stream))

    def forget(self, stream: str) -> None:
        """A removed stream: drop what is held back; its next state (if it comes back) goes at once."""
        self._entries.pop(stream, None)
