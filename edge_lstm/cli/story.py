"""What happened in a replay, in one line a user can read without opening the CSV (issue 25):

    summary: 680 readings, 10 warming up, 12 flagged; alarms raised 1 (pump-7 at 2026-11-27T08:01:05Z),
    cleared 0; highest score 114.5 (pump-7 at 2026-11-27T08:00:11Z, line 302)

`replay` and `evaluate` feed it every result; both end with its line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..result import Result

SHOWN = 3  # alarm events listed by time; the rest counted


def when(ts: float) -> str:
    """An event time as ISO-8601 UTC, to the second (to the millisecond when it has a fraction)."""
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    return t.isoformat(timespec="seconds" if ts == int(ts) else "milliseconds").replace("+00:00", "Z")


@dataclass
class Story:
    readings: int = 0
    warming_up: int = 0
    flagged: int = 0
    raised: list[str] = field(default_factory=list)  # "stream at time" per alarm raised
    cleared: list[str] = field(default_factory=list)
    highest: float | None = None
    highest_at: str = ""

    def add(self, r: Result, line: int | None = None) -> None:
        self.readings += 1
        self.warming_up += r.warming_up
        self.flagged += r.anomaly
        if r.alarm_event is not None:
            (self.raised if r.alarm_event.state == "raised" else self.cleared).append(f"{r.stream} at {when(r.ts)}")
        if self.highest is None or r.score > self.highest:
            self.highest = r.score
            self.highest_at = f"{r.stream} at {when(r.ts)}" + (f", line {line}" if line is not None else "")

    def line(self) -> str:
        def events(what: str, times: list[str]) -> str:
            if not times:
                return f"{what} 0"
            more = f", +{len(times) - SHOWN} more" if len(times) > SHOWN else ""
            return f"{what} {len(times)} ({'; '.join(times[:SHOWN])}{more})"

        top = "none" if self.highest is None else f"{self.highest:.6g} ({self.highest_at})"
        return (
            f"summary: {self.readings} readings, {self.warming_up} warming up, {self.flagged} flagged; "
            f"alarms {events('raised', self.raised)}, {events('cleared', self.cleared)}; highest score {top}"
        )
