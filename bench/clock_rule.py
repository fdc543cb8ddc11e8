"""The clock rule for readings ahead of the daemon's clock, measured (issue 20: "measure the options").

    python bench/clock_rule.py

Simulates 100 streams × 600 readings at 1 Hz through the daemon's decoder (`reading.Decoder` with the
rule under test) and the engine's event-time order (a reading not newer than its stream's last one is
`out_of_order`). Reports, per scenario, the readings lost per stream (rejected for any reason), mean and
worst. Rules:

- `reject`: the rule before issue 20, everything more than `max_future_s` (300 s) ahead is rejected;
- `accept`: no bound (what raising `max_future_s` amounts to);
- `confirm=K`: `reading.FutureGuard` with K readings in a row to confirm a stream's clock (K=3 ships).

Scenarios: a site whose sensors are 2 days ahead of the daemon (a Pi without an RTC); one bogus reading
a year ahead in each stream; two bogus readings in a row; a sensor clock that jumps 2 days ahead midway.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from edge_lstm.reading import Decoder, FutureGuard, Reading

DAY = 86_400.0
STREAMS, READINGS, T0 = 100, 600, 1_764_000_000.0


def scenario_ts(name: str, k: int) -> float:
    """The `ts` the sensor sends for its k-th reading (the daemon's clock reads T0 + k)."""
    if name == "site 2 days ahead":
        return T0 + k + 2 * DAY
    if name == "one bogus reading":
        return T0 + k + (365 * DAY if k == 100 else 0.0)
    if name == "two bogus in a row":
        return T0 + k + (365 * DAY if k in (100, 101) else 0.0)
    if name == "clock jumps 2 days":
        return T0 + k + (2 * DAY if k >= 300 else 0.0)
    raise ValueError(name)


def lost_per_stream(rule: str, scenario: str) -> list[int]:
    last: dict[str, float] = {}
    lookup: Callable[[str], float | None] = last.get
    if rule == "reject":
        dec = Decoder(["a"], max_future_s=300.0)
    elif rule == "accept":
        dec = Decoder(["a"], max_future_s=float("inf"))
    else:
        guard = FutureGuard(300.0, lookup, max_streams=STREAMS)
        guard.confirm = int(rule.split("=")[1])
        dec = Decoder(["a"], max_future_s=300.0, future_guard=guard)
    lost = [0] * STREAMS
    for k in range(READINGS):
        for s in range(STREAMS):
            stream = f"s{s}"
            out = dec.decode(stream, json.dumps({"ts": scenario_ts(scenario, k), "a": 1.0}).encode(), T0 + k)
            if not isinstance(out, Reading) or out.ts <= last.get(stream, float("-inf")):
                lost[s] += 1
                continue
            last[stream] = out.ts
    return lost


def main() -> None:
    rules = ["reject", "accept", "confirm=2", "confirm=3", "confirm=5"]
    scenarios = ["site 2 days ahead", "one bogus reading", "two bogus in a row", "clock jumps 2 days"]
    print(f"readings lost per stream (of {READINGS}), mean / worst, {STREAMS} streams at 1 Hz")
    print(f"{'scenario':<22}" + "".join(f"{r:>14}" for r in rules))
    for sc in scenarios:
        cells = []
        for r in rules:
            lost = lost_per_stream(r, sc)
            cells.append(f"{sum(lost) / len(lost):.0f} / {max(lost)}")
        print(f"{sc:<22}" + "".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()
