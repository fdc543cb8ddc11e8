"""`edge-lstm replay CSV [--model M] [--out scores.csv] [--batch N] [--strict]`: offline scoring.

Runs a CSV of readings through the same validation and the same `Engine` the daemon uses, so the
scores equal what `edge-lstm run` would publish for the same readings in the same order.

Input CSV (header row required; `,`, `;` or tab separated; a UTF-8 byte order mark, as Excel writes, is
skipped):
  - a timestamp column, `ts`, `timestamp` or `datetime`: epoch seconds, ms or µs, or ISO-8601 (no zone = UTC),
    read by the daemon's own `reading.parse_ts` (above 1e11 milliseconds, above 1e14 microseconds);
  - one column per model feature, named as in the model (`edge-lstm inspect` lists them);
  - optionally a `stream` column (many streams in one file); without it every row is stream `replay`.
  Other columns are ignored (and listed in the summary).

Rows are validated exactly like MQTT payloads (`reading.Decoder`): each row becomes the JSON object
the daemon would receive. A row the daemon would reject (empty or non-numeric value, NaN, bad
timestamp, a timestamp not newer than the stream's previous row) is *rejected and counted by reason*,
with its line number in the summary, and the replay goes on, as the daemon does. `--strict` makes the
first rejected row an error instead. A missing feature or timestamp column is always an error.
Exit code 2 on errors (message on stderr naming the column or line), 0 otherwise.

Output CSV: RESULT_COLUMNS (stream, line of the input, ts in epoch seconds, then the result's fields:
docs/scoring.md; empty when not yet known), then prediction_<name> per output column (forecast models)
or output_<name> (score models). One row per accepted reading. The summary on stderr ends with one
line saying what happened (cli/story.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..engine import Engine
from ..ports import StepModel
from ..reading import Reading, Rejection
from ..result import Result
from .plot import PlotUnavailable, Trace, plot
from .progress import ProgressReader
from .rows import ReplayError, open_model, read_rows
from .story import Story

MAX_EXAMPLES = 5  # rejected line numbers kept per reason for the summary


@dataclass
class Summary:
    rows: int = 0
    readings: int = 0  # accepted and stepped
    anomalies: int = 0
    warming_up: int = 0
    streams: set[str] = field(default_factory=set)
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ignored_columns: list[str] = field(default_factory=list)
    max_score: float = 0.0
    story: Story = field(default_factory=Story)  # the last line: readings, flags, alarms, highest score

    def reject(self, rej: Rejection) -> None:
        self.rejected[rej.reason] += 1
        if len(self.examples[rej.reason]) < MAX_EXAMPLES:
            self.examples[rej.reason].append(rej.detail)

    def render(self) -> str:
        lines = [
            f"replay: {self.rows} rows, {len(self.streams)} stream(s): {self.readings} readings scored, "
            f"{self.anomalies} anomalies, {self.warming_up} warming up, max score {self.max_score:.3f}"
        ]
        total = sum(self.rejected.values())
        if total:
            by = ", ".join(f"{r}={n}" for r, n in sorted(self.rejected.items()))
            lines.append(f"replay: {total} rows rejected ({by})")
            for reason, ex in sorted(self.examples.items()):
                for e in ex:
                    lines.append(f"replay:   {reason}: {e}")
        else:
            lines.append("replay: 0 rows rejected")
        if self.ignored_columns:
            lines.append(f"replay: ignored columns: {', '.join(self.ignored_columns)}")
        lines.append(f"replay: {self.story.line()}")
        return "\n".join(lines)


RESULT_COLUMNS = (
    "stream",
    "line",
    "ts",
    "score",
    "anomaly",
    "warming_up",
    "threshold",
    "deviation",
    "deviation_threshold",
    "bias",
    "bias_threshold",
    "likelihood",
    "surprise",  # −log10(1 − likelihood): does not saturate at 6 significant digits
    "alarm",
    "stuck",  # the stuck features' names, "|"-separated; empty when none
)


def result_columns(engine: Engine) -> list[str]:
    prefix = "prediction_" if engine.forecast else "output_"
    return [*RESULT_COLUMNS] + [prefix + n for n in engine.names]


def _opt(x: float | None) -> str:
    return "" if x is None else repr(x)


def result_row(r: Result, line: int) -> list[object]:
    values = r.prediction if r.prediction is not None else (r.output or [])
    return [
        r.stream,
        line,
        repr(r.ts),
        repr(r.score),
        int(r.anomaly),
        int(r.warming_up),
        _opt(r.threshold),
        _opt(r.deviation),
        _opt(r.deviation_threshold),
        _opt(r.bias),
        _opt(r.bias_threshold),
        _opt(r.likelihood),
        _opt(r.surprise),
        int(r.alarm),
        "|".join(r.stuck),
        *(repr(v) for v in values),
    ]


def replay(
    f: TextIO,
    model: StepModel,
    on_result: Callable[[Result, int], None],
    *,
    batch: int = 1024,
    strict: bool = False,
    engine: Engine | None = None,
    on_reading: Callable[[Result, Reading], None] | None = None,
) -> Summary:
    """Replay CSV text from `f` through an engine for `model`; call `on_result(result, line)` per
    accepted reading (`line`: its line in the CSV), and `on_reading(result, reading)` if given.

    Rows go to the engine in batches of `batch` rows (as the daemon's micro-batches): results do not
    depend on the batch size.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    engine = engine or Engine(model, max_streams=10_000_000)  # offline: never evict a stream
    conv, rows = read_rows(f, model.meta.features)
    summary = Summary(ignored_columns=conv.ignored)
    pending: list[Reading | Rejection] = []
    lines: list[int] = []

    def flush() -> None:
        for line, item, out in zip(lines, pending, engine.process(pending)):
            if isinstance(out, Rejection):
                if not out.detail.startswith("line "):  # the engine's duplicate / out_of_order
                    out = Rejection(out.stream, out.reason, f"line {line}: {out.detail}")
                if strict:
                    raise ReplayError(f"rejected ({out.reason}): {out.detail}")
                summary.reject(out)
                continue
            summary.readings += 1
            summary.anomalies += out.anomaly
            summary.warming_up += out.warming_up
            summary.max_score = max(summary.max_score, out.score)
            summary.story.add(out, line)
            on_result(out, line)
            if on_reading is not None:
                on_reading(out, item)  # type: ignore[arg-type]  # a Result comes from a Reading
        pending.clear()
        lines.clear()

    for line, row in rows:
        summary.rows += 1
        item = conv.convert(row, line)
        if isinstance(item, Rejection) and strict:
            raise ReplayError(f"rejected ({item.reason}): {item.detail}")
        if item.stream:
            summary.streams.add(item.stream)
        pending.append(item)
        lines.append(line)
        if len(pending) >= batch:
            flush()
    flush()
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "csv",
        metavar="CSV",
        help="readings: a ts/timestamp column, one column per feature, optionally a stream column ('-' for stdin)",
    )
    parser.add_argument("--model", metavar="M", help="ONNX step model (default: the packaged model)")
    parser.add_argument("--out", metavar="FILE", help="write the scores CSV here (default: stdout)")
    parser.add_argument(
        "--batch",
        type=int,
        default=1024,
        metavar="N",
        help="rows per engine call, like the daemon's micro-batches (default 1024)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first row the daemon would reject (exit 2) instead of counting it",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="draw values, predictions, score, deviation, thresholds and alarm spans of one stream "
        "(the first, or --stream) to this PNG (needs the plot extra: matplotlib)",
    )
    parser.add_argument("--stream", metavar="ID", help="the stream --plot draws (default: the first one)")


class _Failed(Exception):
    """A replay that cannot go on: one line on stderr, exit code 2."""


def _open_source(args: argparse.Namespace) -> tuple[TextIO, Any]:
    """The CSV (stdin for '-') and what to read it through (a progress line for long files on a terminal)."""
    try:
        src: TextIO = sys.stdin if args.csv == "-" else open(args.csv, newline="", encoding="utf-8")
    except OSError as e:
        raise _Failed(f"cannot read {args.csv}: {e.strerror}") from None
    if src is not sys.stdin and sys.stderr.isatty() and os.path.getsize(args.csv) > 1 << 20:
        return src, ProgressReader(src, os.path.getsize(args.csv))
    return src, src


class _Output:
    """The scores CSV: stdout, or `--out` written to FILE.partial and renamed only when complete."""

    def __init__(self, out: str | None) -> None:
        self.path = Path(out) if out else None
        self.tmp = self.path.with_name(self.path.name + ".partial") if self.path else None
        try:
            self.sink: TextIO = open(self.tmp, "w", newline="", encoding="utf-8") if self.tmp else sys.stdout
        except OSError as e:
            raise _Failed(f"cannot write {out}: {e.strerror}") from None

    def close(self, ok: bool) -> None:
        if self.tmp is None or self.path is None:
            self.sink.flush()
            return
        self.sink.close()
        if ok:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _score(
    args: argparse.Namespace, model: StepModel, source: Any, sink: TextIO
) -> tuple[Summary, Engine, Trace | None, str]:
    """Replay `source` into `sink`; the summary, the engine, the --plot trace and the stream it drew."""
    writer = csv.writer(sink)
    engine = Engine(model, max_streams=10_000_000)
    header = [result_columns(engine)]  # written with the first result: nothing on a header error
    trace = Trace() if args.plot else None
    first: list[str] = []

    def write(r: Result, line: int) -> None:
        if not first:
            first.append(r.stream)
        if header:
            writer.writerow(header.pop())
        writer.writerow(result_row(r, line))

    def keep(r: Result, reading: Reading) -> None:
        if trace is not None and r.stream == (args.stream if args.stream is not None else first[0]):
            trace.add(r, reading.values)

    summary = replay(source, model, write, batch=args.batch, strict=args.strict, engine=engine, on_reading=keep)
    if isinstance(source, ProgressReader):
        source.done()
    if header:
        writer.writerow(header.pop())
    return summary, engine, trace, (args.stream if args.stream is not None else (first[0] if first else ""))


def _draw(args: argparse.Namespace, trace: Trace, names: tuple[str, ...], stream: str) -> None:
    if not trace.ts:
        raise _Failed(f"--plot: no readings of stream {args.stream or '(any)'} to draw")
    try:
        plot(trace, names, Path(args.plot), f"{stream}: {args.csv}")
    except PlotUnavailable as e:
        raise _Failed(str(e)) from None
    print(f"replay: plot written to {args.plot}", file=sys.stderr)


def _main(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise _Failed(f"--batch must be >= 1, got {args.batch}")
    try:
        model = open_model(args.model)
    except ValueError as e:
        raise _Failed(str(e)) from None
    src, source = _open_source(args)
    ok = False
    try:
        output = _Output(args.out)
        try:
            summary, engine, trace, stream = _score(args, model, source, output.sink)
            ok = True
        except ReplayError as e:
            raise _Failed(f"{args.csv}: {e}") from None
        except UnicodeDecodeError as e:
            raise _Failed(f"{args.csv}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        finally:
            output.close(ok)
    finally:
        if src is not sys.stdin:
            src.close()
    print(summary.render(), file=sys.stderr)
    if trace is not None:
        _draw(args, trace, engine.names, stream)
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except _Failed as e:
        print(f"edge-lstm replay: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
