"""The demo's live terminal view and its plain-line fallback."""

from __future__ import annotations

import math
import shutil

from .fleet import Fleet
from .observer import Observer


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


def bar(score: float, threshold: float | None, width: int = 12) -> str:
    full = 2.0 * (threshold or 1.0)
    n = min(width, int(round(width * min(score, full) / full))) if math.isfinite(score) else width
    return "█" * n + "·" * (width - n)


def render_live(obs: Observer, fleet: Fleet, header: str, elapsed: float, seconds: float, style: Style) -> str:
    cols, rows = shutil.get_terminal_size((100, 40))
    thr = obs.threshold
    active = {a.stream: a.kind for a in fleet.anomalies if a.start <= fleet.steps_done - 1 < a.start + a.length}
    detected = sum(a.first_flag_ts is not None for a in fleet.anomalies if a.start < fleet.steps_done)
    injected = sum(a.start < fleet.steps_done for a in fleet.anomalies)
    lines = [
        style(header, "1"),
        f"t {elapsed:5.1f}/{seconds:.0f} s   published {fleet.published}   results {obs.results}   "
        f"{obs.rate:,.0f} readings/s   flagged {obs.flagged}",
        f"anomalies injected {injected} (active now {len(active)})   detected {detected}   "
        f"false-alarm readings {obs.false_alarms}   threshold {f'{thr:.3g}' if thr is not None else '-'}",
        "",
    ]
    cell_w = 44
    n_cols = max(1, cols // cell_w)
    feed_h = 2 + len(obs.feed)
    avail = max(4, rows - len(lines) - feed_h - 2)
    names = fleet.streams
    if len(names) > avail * n_cols:  # too many to show: the highest scores first
        names = sorted(names, key=lambda s: -(obs.streams[s].score if s in obs.streams else 0.0))
        names = names[: avail * n_cols]
    n_rows = math.ceil(len(names) / n_cols)
    grid = []
    for r in range(n_rows):
        cells = []
        for c in range(n_cols):
            i = c * n_rows + r
            if i >= len(names):
                break
            s = names[i]
            v = obs.streams.get(s)
            if v is None:
                cell = f"{s:<14} {'waiting':<21}"
                cells.append(style(cell, "2"))
                continue
            b = bar(v.score, thr)
            mark = active.get(s, "")
            text = f"{s:<14} {b} {v.score:6.2f}"
            if v.warming_up:
                text = style(text, "2")
            elif v.anomaly:
                text = style(text, "1;31")
            elif thr and v.score > 0.7 * thr:
                text = style(text, "33")
            cells.append(text + " " + style(f"{mark[:8]:<8}", "35"))
        grid.append("  ".join(cells))
    lines += grid
    if len(names) < len(fleet.streams):
        lines.append(style(f"(showing the {len(names)} highest scores of {len(fleet.streams)} streams)", "2"))
    lines += ["", style("flagged (newest first):", "1")]
    lines += list(obs.feed) or [style("  nothing flagged yet", "2")]
    return "\x1b[H" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[J"


def plain_line(obs: Observer, fleet: Fleet, elapsed: float) -> str:
    injected = sum(a.start < fleet.steps_done for a in fleet.anomalies)
    detected = sum(a.first_flag_ts is not None for a in fleet.anomalies)
    return (
        f"demo t={elapsed:.1f}s published={fleet.published} results={obs.results} "
        f"rate={obs.rate:.0f}/s flagged={obs.flagged} injected={injected} detected={detected} "
        f"false_alarm_readings={obs.false_alarms}"
    )
