"""`edge-lstm replay`: a CSV through the same validation and engine as the daemon, offline."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.models import make_step_model

from edge_lstm import Decoder, Engine, Reading, Result, load_model
from edge_lstm.cli import main as cli
from edge_lstm.cli.replay import replay
from edge_lstm.cli.rows import ReplayError
from edge_lstm.demo.simulate import FEATURES, normal_series

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_step_model(tmp_path_factory.mktemp("m") / "fc.onnx", features=FEATURES, hidden=8, warmup_steps=3)


def fleet_csv(n_streams: int = 3, n_steps: int = 40, iso: bool = False) -> tuple[str, list[Reading]]:
    """Interleaved rows of several streams (as a log would hold them), and the same readings."""
    series = {f"m{i}": normal_series(n_steps, seed=i) for i in range(n_streams)}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["timestamp" if iso else "ts", "stream", *FEATURES, "comment"])
    readings = []
    for t in range(n_steps):
        for s, values in series.items():
            ts = T0 + t
            shown = datetime.fromtimestamp(ts, UTC).isoformat() if iso else repr(ts)
            w.writerow([shown, s, *(repr(float(v)) for v in values[t]), "ok"])
            readings.append(Reading(s, ts, tuple(float(v) for v in values[t])))
    return buf.getvalue(), readings


@pytest.mark.parametrize("batch,iso", [(1, False), (7, True), (1024, False)])
def test_results_equal_the_engine(model_path: Path, batch: int, iso: bool) -> None:
    text, readings = fleet_csv(iso=iso)
    model = load_model(model_path)
    got: list[Result] = []
    summary = replay(io.StringIO(text), model, lambda r, line: got.append(r), batch=batch)
    want = Engine(model).process(readings)  # the whole file in one call
    assert summary.readings == len(readings) == len(got) and summary.rows == len(readings)
    assert not summary.rejected and summary.ignored_columns == ["comment"]
    assert len(summary.streams) == 3
    for g, w in zip(got, want):
        assert isinstance(w, Result)
        assert (g.stream, g.ts, g.anomaly, g.warming_up) == (w.stream, w.ts, w.anomaly, w.warming_up)
        assert g.score == pytest.approx(w.score, abs=1e-5)
        assert g.prediction == pytest.approx(w.prediction, abs=1e-5)


def test_no_stream_column_means_one_stream(model_path: Path) -> None:
    rows = "ts,temperature,vibration,current\n" + "".join(f"{T0 + i},{40 + i * 0.1},0.5,10\n" for i in range(5))
    got: list[Result] = []
    s = replay(io.StringIO(rows), load_model(model_path), lambda r, line: got.append(r))
    assert [r.stream for r in got] == ["replay"] * 5
    assert [r.warming_up for r in got] == [True, True, True, False, False]
    assert s.streams == {"replay"}


BAD_ROWS = """ts,stream,temperature,vibration,current
1700000000,a,40,0.5,10
1700000001,a,40,0.5,hot
1700000002,a,40,,10
1700000003,a,nan,0.5,10
yesterday,a,40,0.5,10
1700000004,a,40,0.5,10
1700000002,a,40,0.5,10
1700000004,a,40,0.5,10
1700000005,,40,0.5,10
1700000006,a,40,0.5
1700000001,b,40,0.5,10
"""


def test_bad_rows_are_rejected_by_reason_with_line_numbers(model_path: Path) -> None:
    model = load_model(model_path)
    got: list[Result] = []
    s = replay(io.StringIO(BAD_ROWS), model, lambda r, line: got.append(r))
    assert [(r.stream, r.ts) for r in got] == [("a", T0), ("a", T0 + 4), ("b", T0 + 1)]
    assert dict(s.rejected) == {
        "not_number": 1,
        "missing_feature": 1,
        "not_finite": 1,
        "bad_ts": 1,
        "out_of_order": 1,
        "duplicate": 1,
        "bad_stream": 1,
        "wrong_length": 1,
    }
    assert s.examples["not_number"] == ["line 3: current: 'hot' is not a number"]
    assert s.examples["missing_feature"][0].startswith("line 4: missing ['vibration']")
    assert s.examples["bad_ts"][0].startswith("line 6:")
    assert s.examples["out_of_order"][0].startswith("line 8:")
    assert s.examples["duplicate"][0].startswith("line 9:")
    assert s.examples["bad_stream"][0].startswith("line 10:")
    assert s.examples["wrong_length"][0].startswith("line 11:")
    # Rejected rows leave the stream's state untouched: the same as replaying only the good rows.
    want = Engine(model).process([Reading("a", T0, (40.0, 0.5, 10.0)), Reading("a", T0 + 4, (40.0, 0.5, 10.0))])
    assert isinstance(want[1], Result)
    assert got[1].score == pytest.approx(want[1].score, abs=1e-6)


def test_strict_stops_at_the_first_bad_row(model_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"line 3: current: 'hot' is not a number"):
        replay(io.StringIO(BAD_ROWS), load_model(model_path), lambda r, line: None, strict=True)


@pytest.mark.parametrize(
    "header,needle",
    [
        ("ts,temperature,vibration", "missing feature column(s) ['current']"),
        ("time,temperature,vibration,current", "no timestamp column"),
        ("ts,temperature,vibration,current,current", "duplicate column(s) ['current']"),
    ],
)
def test_header_errors_exit_2(
    model_path: Path, tmp_path: Path, header: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "in.csv"
    p.write_text(header + "\n1700000000,1,2,3\n")
    out = tmp_path / "scores.csv"
    assert cli(["replay", str(p), "--model", str(model_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "line 1" in err and str(p) in err
    assert not out.exists() and not (tmp_path / "scores.csv.partial").exists()


def test_cli_strict_and_empty(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(BAD_ROWS)
    assert cli(["replay", str(p), "--model", str(model_path), "--strict"]) == 2
    cap = capsys.readouterr()
    assert "line 3" in cap.err and "not_number" in cap.err and cap.out == ""
    e = tmp_path / "empty.csv"
    e.write_text("")
    assert cli(["replay", str(e), "--model", str(model_path)]) == 2
    assert "empty" in capsys.readouterr().err


def test_cli_subprocess_writes_scores_and_summary(model_path: Path, tmp_path: Path) -> None:
    text, readings = fleet_csv(n_streams=2, n_steps=10)
    src = tmp_path / "fleet.csv"
    src.write_text(text + "1700000000,m0,1,2,3,late\n")
    out = tmp_path / "scores.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_lstm",
            "replay",
            str(src),
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--batch",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "20 readings scored" in proc.stderr and "1 rows rejected (out_of_order=1)" in proc.stderr
    assert "line 22" in proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20
    assert list(rows[0]) == [
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
        "surprise",
        "alarm",
        "stuck",
        "prediction_temperature",
        "prediction_vibration",
        "prediction_current",
    ]
    want = Engine(load_model(model_path)).process(readings)
    for row, w in zip(rows, want):
        assert row["stream"] == w.stream and float(row["ts"]) == w.ts  # type: ignore[union-attr]
        assert int(row["line"]) >= 2  # the input line the reading came from
        assert math.isclose(float(row["score"]), w.score, abs_tol=1e-5)  # type: ignore[union-attr]
        assert row["anomaly"] == str(int(w.anomaly))  # type: ignore[union-attr]


def test_score_model_columns_and_stdout(tmp_path: Path) -> None:
    m = make_step_model(tmp_path / "s.onnx", features=FEATURES, kind="score")
    src = tmp_path / "in.csv"
    src.write_text("ts,temperature,vibration,current\n2023-11-14T22:13:20Z,40,0.5,10\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "replay", str(src), "--model", str(m)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.endswith("alarm,stuck,output_score")
    assert row.startswith("replay,2,1700000000.0,")


def test_excel_csv_with_bom_and_semicolons(model_path: Path) -> None:
    """A CSV saved by Excel ("CSV UTF-8": a byte order mark) or with ; separators, as SKAB's, is read."""
    text = "\ufeffdatetime;temperature;vibration;current\n2023-11-14 22:13:20;1;2;3\n2023-11-14 22:13:21;1.5;2;3\n"
    got: list[Result] = []
    s = replay(io.StringIO(text), load_model(model_path), lambda r, line: got.append(r))
    assert s.readings == 2 and not s.rejected
    assert [r.ts for r in got] == [1700000000.0, 1700000001.0]


def test_decoder_is_the_validation(model_path: Path) -> None:
    """Replay accepts a row exactly when the daemon's Decoder accepts the equivalent payload."""
    from edge_lstm.cli.rows import RowReader

    conv = RowReader(["ts", *FEATURES], FEATURES)
    dec = Decoder(FEATURES)
    for cells, payload in [
        (["1700000000", "1", "2", "3"], b'{"ts":1700000000,"temperature":1,"vibration":2,"current":3}'),
        (["1700000000", "1", "x", "3"], b'{"ts":1700000000,"temperature":1,"vibration":"x","current":3}'),
        (["1e999", "1", "2", "3"], b'{"ts":1e999,"temperature":1,"vibration":2,"current":3}'),
        (["1700000000", "1", "2", "1e999"], b'{"ts":1700000000,"temperature":1,"vibration":2,"current":1e999}'),
        (
            ["2023-11-14T22:13:20", "1", "2", "3"],
            b'{"ts":"2023-11-14T22:13:20","temperature":1,"vibration":2,"current":3}',
        ),
        (["1700000000", "NaN", "2", "3"], b'{"ts":1700000000,"temperature":NaN,"vibration":2,"current":3}'),
        (["1700000000", "1", "2", "true"], b'{"ts":1700000000,"temperature":1,"vibration":2,"current":"true"}'),
    ]:
        a = conv.convert(cells, 2)
        b = dec.decode("replay", payload, 1_800_000_000.0)
        assert type(a) is type(b)
        assert getattr(a, "reason", None) == getattr(b, "reason", None)


def test_plot_draws_the_replayed_stream(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    rows = ["ts,temperature,vibration,current"] + [
        f"{1_700_000_000 + t},{20 + t % 7},{0.3},{9 + (t % 3)}" for t in range(60)
    ]
    src = tmp_path / "in.csv"
    src.write_text("\n".join(rows) + "\n")
    png = tmp_path / "out.png"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "replay", str(src), "--model", str(model_path), "--out",
         str(tmp_path / "o.csv"), "--plot", str(png)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "plot written to" in proc.stderr


def test_progress_reader_counts_and_draws(tmp_path: Path) -> None:
    from edge_lstm.cli.progress import ProgressReader

    out = io.StringIO()
    r = ProgressReader(io.StringIO("a,b\n1,2\n3,4\n"), total=12, out=out, every_s=0.0)
    assert r.readline() == "a,b\n" and list(r) == ["1,2\n", "3,4\n"]
    assert r.read == 12 and r.lines == 3 and "100 % (3 rows)" in out.getvalue()


def test_plot_adds_the_bias_panel_when_the_stream_has_one(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    from edge_lstm.cli.plot import Trace, plot
    from edge_lstm.result import Result

    def png_height(bias: float | None) -> int:
        trace = Trace()
        for t in range(50):
            r = Result("s", 1_700_000_000.0 + t, 0.5, t == 40, 2.0, False, {}, prediction=[1.0, 2.0])
            r.deviation, r.deviation_threshold = 1.0, 2.0
            r.bias, r.bias_threshold = (None, None) if bias is None else (bias * t, 30.0)
            trace.add(r, [1.0, 2.0])
        png = tmp_path / f"{bias}.png"
        plot(trace, ["a", "b"], png, "s")
        return int.from_bytes(png.read_bytes()[20:24], "big")  # IHDR height

    # 2.0 inches at 100 dpi per panel: two features, score, deviation (+ bias).
    assert png_height(None) == 4 * 200 and png_height(1.0) == 5 * 200
