"""`edge-lstm evaluate CSV... [--model M] [--score-from N] [--json]`: detection quality on labelled data.

Each CSV is replayed as its own stream through the same decoder and `Engine` as `replay` (so the flags
are what `edge-lstm run` would publish), and compared with its `anomaly` column (0/1 per row). Printed:

- pointwise F1, FAR (false alarm rate: flagged normal rows / normal rows) and MAR (missed anomalous
  rows / anomalous rows), TP/FP/FN/TN summed over all files (SKAB's published protocol);
- events: a labelled segment (consecutive anomalous rows) is *detected* when a reading inside it is
  flagged, and *alarmed* when the stream's alarm is raised inside it; delay = readings from the segment's
  start to the first flag / alarm (median);
- alarm precision: alarms raised inside a labelled segment / all alarms raised;
- false alarms per day: alarms raised on normal rows, per day of normal operation (from the row times).

`--score-from N` leaves each file's first N rows out of the metrics (they still go through the engine:
SKAB's per-file protocol trains on the first 400 rows and tests on the rest). Rows are read as
`replay` reads them (`ts`/`timestamp`/`datetime` column, `,`/`;`/tab separated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..ports import StepModel
from ..reading import Rejection
from ..result import Result
from .rows import ReplayError, open_model, read_rows
from .story import Story

LABEL = "anomaly"


@dataclass
class FileRun:
    """One labelled file through the engine: per scored row, its label, flag and alarm state."""

    name: str
    labels: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    alarm: list[int] = field(default_factory=list)  # the stream's alarm state after the row
    raised: list[int] = field(default_factory=list)  # 1 where the row raised the alarm
    ts: list[float] = field(default_factory=list)
    rejected: int = 0


@dataclass
class Quality:
    files: int = 0
    rows: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    segments: int = 0
    detected: int = 0
    alarmed: int = 0
    flag_delays: list[int] = field(default_factory=list)
    alarm_delays: list[int] = field(default_factory=list)
    alarms: int = 0  # raised in all
    alarms_in_segments: int = 0
    false_alarms: int = 0  # raised on a normal row
    normal_seconds: float = 0.0
    rejected: int = 0

    def add(self, run: FileRun) -> None:
        self.files += 1
        self.rows += len(run.labels)
        self.rejected += run.rejected
        for y, f in zip(run.labels, run.flags):
            self.tp += y and f
            self.fp += (not y) and f
            self.fn += y and not f
            self.tn += not y and not f
        for start, end in segments(run.labels):
            self.segments += 1
            hit = next((i - start for i in range(start, end) if run.flags[i]), None)
            if hit is not None:
                self.detected += 1
                self.flag_delays.append(hit)
            on = next((i - start for i in range(start, end) if run.alarm[i]), None)
            if on is not None:
                self.alarmed += 1
                self.alarm_delays.append(on)
        for i, r in enumerate(run.raised):
            if r:
                self.alarms += 1
                if run.labels[i]:
                    self.alarms_in_segments += 1
                else:
                    self.false_alarms += 1
        steps = [b - a for a, b in zip(run.ts, run.ts[1:]) if b > a]
        step = statistics.median(steps) if steps else 0.0
        self.normal_seconds += step * (len(run.labels) - sum(run.labels))

    def metrics(self) -> dict[str, Any]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        days = self.normal_seconds / 86_400
        return {
            "files": self.files,
            "rows": self.rows,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "far_pct": 100 * fp / (fp + tn) if fp + tn else 0.0,
            "mar_pct": 100 * fn / (fn + tp) if fn + tp else 0.0,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "segments": self.segments,
            "segments_flagged": self.detected,
            "segments_alarmed": self.alarmed,
            "median_flag_delay": statistics.median(self.flag_delays) if self.flag_delays else None,
            "median_alarm_delay": statistics.median(self.alarm_delays) if self.alarm_delays else None,
            "alarms": self.alarms,
            "alarm_precision": self.alarms_in_segments / self.alarms if self.alarms else None,
            "false_alarms": self.false_alarms,
            "false_alarms_per_day": self.false_alarms / days if days > 0 else None,
            "rejected_rows": self.rejected,
        }


def segments(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive 1s."""
    out, start = [], None
    for i, y in enumerate([*labels, 0]):
        if y and start is None:
            start = i
        elif not y and start is not None:
            out.append((start, i))
            start = None
    return out


def run_file(
    path: Path, model: StepModel, *, score_from: int = 0, engine: Engine | None = None, story: Story | None = None
) -> FileRun:
    """Replay one labelled CSV as one stream; keep rows from `score_from` (0-based data row) on. Every
    result (also before `score_from`) goes to `story` if given."""
    engine = engine or Engine(model, max_streams=16)
    run = FileRun(path.name)
    with open(path, newline="", encoding="utf-8") as f:
        conv, rows = read_rows(f, model.meta.features)
        if LABEL not in conv.header:
            raise ReplayError(f"line 1: no '{LABEL}' column (0/1 per row) to evaluate against")
        label_index = conv.header.index(LABEL)
        for k, (line, row) in enumerate(rows):
            item = conv.convert(row, line)
            if isinstance(item, Rejection):
                run.rejected += 1
                continue
            item.stream = path.name
            (out,) = engine.process([item])
            if not isinstance(out, Result):
                run.rejected += 1
                continue
            if story is not None:
                story.add(out, line)
            if k < score_from:
                continue
            try:
                label = int(float(row[label_index]))
            except ValueError:
                raise ReplayError(f"line {line}: '{LABEL}' is {row[label_index]!r}, not 0 or 1") from None
            run.labels.append(1 if label else 0)
            run.flags.append(int(out.anomaly))
            run.alarm.append(int(out.alarm))
            run.raised.append(int(out.alarm_event is not None and out.alarm_event.state == "raised"))
            run.ts.append(out.ts)
    return run


def render(m: dict[str, Any]) -> str:
    def opt(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    return "\n".join(
        [
            f"evaluate: {m['files']} file(s), {m['rows']} scored rows ({m['rejected_rows']} rejected)",
            f"pointwise: F1 {m['f1']:.3f}  FAR {m['far_pct']:.1f} %  MAR {m['mar_pct']:.1f} %  "
            f"(TP {m['tp']} FP {m['fp']} FN {m['fn']} TN {m['tn']})",
            f"events: {m['segments_flagged']}/{m['segments']} flagged (median delay "
            f"{opt(m['median_flag_delay'], '.0f')} readings), {m['segments_alarmed']}/{m['segments']} alarmed "
            f"(median delay {opt(m['median_alarm_delay'], '.0f')})",
            f"alarms: {m['alarms']} raised, precision {opt(m['alarm_precision'], '.2f')}, "
            f"{m['false_alarms']} on normal rows = {opt(m['false_alarms_per_day'], '.2f')} per day of normal operation",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", nargs="+", type=Path, help="labelled CSVs: readings plus an 'anomaly' column (0/1)")
    parser.add_argument("--model", metavar="M", help="ONNX step model (default: the packaged model)")
    parser.add_argument(
        "--score-from",
        type=int,
        default=0,
        metavar="N",
        help="leave each file's first N rows out of the metrics (they are still replayed; default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def main(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"edge-lstm evaluate: {msg}", file=sys.stderr)
        return 2

    if args.score_from < 0:
        return fail(f"--score-from must be >= 0, got {args.score_from}")
    try:
        model = open_model(args.model)
    except ValueError as e:
        return fail(str(e))
    total, story = Quality(), Story()
    for path in args.csv:
        try:
            total.add(run_file(path, model, score_from=args.score_from, story=story))
        except OSError as e:
            return fail(f"cannot read {path}: {e.strerror}")
        except ReplayError as e:
            return fail(f"{path}: {e}")
        except UnicodeDecodeError as e:
            return fail(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    m = total.metrics()
    print(json.dumps(m) if args.json else render(m))
    print(story.line(), file=sys.stderr if args.json else sys.stdout)  # --json: stdout stays one document
    return 0
