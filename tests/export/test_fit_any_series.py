"""`fit` on any series a user has (issue 24): constant, short, integer counts, large magnitudes, irregular
timestamps, gaps and missing values. Each is fitted through the command line, the written model is loaded
by the daemon's loader (an onnxruntime session) and the series is replayed through `edge-lstm replay`'s
engine path with an anomaly injected: the model must serve it, flag the anomaly and stay quiet on the
normal readings. Only unusable input (no numeric column, too few rows) is an error: one line, exit 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from support.outcomes import present

from edge_lstm import load_model
from edge_lstm.cli.replay import replay
from edge_lstm.result import Result

pytest.importorskip("torch", reason="needs torch (the export extra)")


from edge_lstm_export.cli import main
from edge_lstm_export.fit import _verdict

pytestmark = pytest.mark.export

T0 = 1_700_000_000
FAST = ["--epochs", "4", "--hidden", "8", "--quiet"]


def write(path: Path, values: Sequence[object], ts: Sequence[object] | None = None, ts_name: str = "ts") -> Path:
    ts = ts if ts is not None else [T0 + 60 * i for i in range(len(values))]
    path.write_text(f"{ts_name},value\n" + "".join(f"{t},{v}\n" for t, v in zip(ts, values)))
    return path


def fit(csv: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[Path, list[str]]:
    out = csv.with_suffix(".onnx")
    rc = main(["fit", str(csv), "--out", str(out), *FAST, *extra])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.err == ""  # --quiet: nothing on stderr, the notes and the verdict are on stdout
    return out, cap.out.splitlines()


def replayed(model: Path, csv: Path) -> tuple[list[Result], list[int], int]:
    """Results and their CSV lines, and the number of rows the daemon's decoder rejected."""
    results: list[Result] = []
    lines: list[int] = []

    def keep(r: Result, line: int) -> None:
        results.append(r)
        lines.append(line)

    with open(csv) as f:
        summary = replay(f, load_model(model), keep)
    return results, lines, sum(summary.rejected.values())


def flagged_lines(results: list[Result], lines: list[int]) -> set[int]:
    return {line for r, line in zip(results, lines) if r.anomaly}


def verdicts(out: list[str]) -> list[str]:
    return [line for line in out if "learned nothing useful" in line]


def test_constant_series_fits_says_so_in_one_line_and_flags_a_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, out = fit(write(tmp_path / "flat.csv", [45.0] * 300), capsys)
    assert verdicts(out) == [
        "fit: the LSTM learned nothing useful: every feature is constant (value = 45); the model still "
        "carries the statistical channels the daemon computes for every stream (deviation, bias, stuck "
        "sensor), and any change of value is flagged"
    ]
    meta = load_model(model).meta
    assert meta.calibration is not None and meta.calibration.threshold > 0
    assert meta.provenance["fit"]["learned"] is False
    # The same constant replays clean (its start-up included); a step of 1 is flagged when it comes.
    values = [45.0] * 400 + [46.0] * 3 + [45.0] * 100
    results, lines, rejected = replayed(model, write(tmp_path / "step.csv", values))
    assert rejected == 0 and len(results) == 503
    flags = flagged_lines(results, lines)
    assert 402 in flags  # line 402 is row 400, the first 46
    assert min(flags) == 402


def test_short_series_of_100_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    values = np.sin(np.arange(100) / 5) + rng.normal(0, 0.1, 100)
    model, out = fit(write(tmp_path / "short.csv", [f"{v:.4f}" for v in values]), capsys)
    meta = load_model(model).meta
    assert meta.sample_interval_s == 60.0
    assert "data: sample interval 60 s (median step of the timestamps)" in out
    spiked = [*values, *(np.sin(np.arange(100, 200) / 5) + rng.normal(0, 0.1, 100))]
    spiked[150] += 5.0  # 50 sigma of the noise
    results, lines, _ = replayed(model, write(tmp_path / "short_spike.csv", [f"{v:.4f}" for v in spiked]))
    assert 152 in flagged_lines(results, lines)


def test_integer_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    counts = rng.poisson(3, 600)
    model, _ = fit(write(tmp_path / "counts.csv", counts[:400].tolist()), capsys)
    counts[500] = 40  # about 21 sigma of Poisson(3)
    results, lines, _ = replayed(model, write(tmp_path / "counts_spike.csv", counts.tolist()))
    flags = flagged_lines(results, lines)
    assert 502 in flags
    assert len(flags - set(range(502, 520))) <= 0.02 * len(results)


def test_large_magnitudes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes counters around 1e9: scaled in float64, predictions in the series' own units."""
    rng = np.random.default_rng(3)
    n = np.arange(600)
    values = 1e9 + 1e7 * np.sin(n / 20) + rng.normal(0, 1e5, 600)
    model, _ = fit(write(tmp_path / "bytes.csv", [f"{v:.0f}" for v in values[:400]]), capsys)
    meta = load_model(model).meta
    assert meta.scaling.offset[0] == pytest.approx(1e9, rel=0.01)
    values[500] += 1e8
    results, lines, _ = replayed(model, write(tmp_path / "bytes_spike.csv", [f"{v:.0f}" for v in values]))
    assert 502 in flagged_lines(results, lines)
    predictions = np.asarray([present(r.prediction)[0] for r in results[20:400]])
    assert np.abs(predictions - values[21:401]).max() < 0.1 * 1e9  # near the values, in bytes


def test_irregular_timestamps_record_the_median_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    ts = T0 + np.cumsum(rng.choice([300, 300, 300, 301, 299, 600, 3600], 400))
    values = np.sin(np.arange(400) / 10) + rng.normal(0, 0.1, 400)
    csv = write(tmp_path / "irregular.csv", [f"{v:.4f}" for v in values], ts=ts.tolist())
    model, out = fit(csv, capsys)
    assert load_model(model).meta.sample_interval_s == 300.0
    results, _, rejected = replayed(model, csv)
    assert rejected == 0 and len(results) == 400


@pytest.mark.parametrize("ts_name", ["ts", "timestamp", "datetime"])
def test_every_timestamp_column_replay_reads_gives_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ts_name: str
) -> None:
    """ISO-8601 text as NAB writes it, or epoch seconds, under each name `edge-lstm replay` accepts."""
    rng = np.random.default_rng(5)
    values = [f"{v:.4f}" for v in np.sin(np.arange(200) / 7) + rng.normal(0, 0.1, 200)]
    stamps = [f"2014-04-01 {h:02d}:{m:02d}:00" for h in range(24) for m in range(0, 60, 5)][:200]
    model, _ = fit(write(tmp_path / "iso.csv", values, ts=stamps, ts_name=ts_name), capsys)
    assert load_model(model).meta.sample_interval_s == 300.0


def test_an_explicit_interval_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = [f"{v:.4f}" for v in np.sin(np.arange(200) / 7)]
    model, out = fit(write(tmp_path / "given.csv", values), capsys, "--sample-interval", "5")
    assert load_model(model).meta.sample_interval_s == 5.0
    assert not [line for line in out if "sample interval" in line]


def test_gaps_and_missing_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Empty cells, NaN and missing-value markers, a repeated and a backwards timestamp, an unreadable
    one and an hour-long gap: those rows are left out (the daemon rejects them too), said in one line each."""
    rng = np.random.default_rng(6)
    ts: list[object] = [T0 + 60 * i for i in range(400)]
    ts[200:] = [T0 + 60 * i + 3600 for i in range(200, 400)]  # an hour without readings
    values: list[object] = [f"{v:.4f}" for v in np.sin(np.arange(400) / 10) + rng.normal(0, 0.1, 400)]
    for i, marker in zip((10, 50, 90, 130, 170), ("", "NaN", "nan", "NA", "inf")):
        values[i] = marker
    ts[300] = ts[299]  # a duplicate
    ts[320] = T0  # back in time
    ts[340] = "soon"
    csv = write(tmp_path / "holes.csv", values, ts=ts)
    model, out = fit(csv, capsys)
    assert "data: 5 row(s) with a missing or non-numeric value left out ('value' 5)" in out
    assert "data: 1 row(s) with an unreadable timestamp left out" in out
    assert "data: 2 row(s) with a timestamp not newer than the previous row's left out" in out
    meta = load_model(model).meta
    assert meta.sample_interval_s == 60.0
    assert meta.provenance["fit"]["train_rows"] + meta.provenance["fit"]["held_out_rows"] == 400 - 8
    results, _, rejected = replayed(model, csv)
    assert rejected == 8 and len(results) == 392  # the same rows, rejected by the daemon's own rules


def test_a_text_column_is_not_a_feature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "text.csv"
    csv.write_text("ts,status,value\n" + "".join(f"{T0 + i},ok,{np.sin(i / 6):.4f}\n" for i in range(200)))
    model, out = fit(csv, capsys)
    assert load_model(model).meta.features == ["value"]
    assert "data: column(s) ['status'] hold no numbers: not features" in out


def test_white_noise_says_the_lstm_learned_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(7)
    model, out = fit(write(tmp_path / "noise.csv", [f"{v:.4f}" for v in rng.normal(5, 1, 400)]), capsys)
    (line,) = verdicts(out)
    assert "is no better than the" in line and line.endswith("and its score flags sudden changes")
    assert load_model(model).meta.provenance["fit"]["learned"] is False


def test_the_verdict_compares_with_the_better_naive_forecast() -> None:
    data = np.random.default_rng(0).normal(size=(100, 2))
    assert _verdict(["a", "b"], data, best=0.5, naive="last-value", naive_mse=1.0) is None
    line = _verdict(["a", "b"], data, best=0.97, naive="mean", naive_mse=1.0)
    assert line is not None and "MSE 0.97, scaled) is no better than the mean forecast's (1)" in line
    flat = _verdict(["a", "b"], np.tile([3.0, 4.0], (9, 1)), best=0.0, naive="mean", naive_mse=0.0)
    assert "every feature is constant (a = 3, b = 4)" in str(flat)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("ts,status\n" + "".join(f"{T0 + i},ok\n" for i in range(200)), [], "no numeric feature column"),
        ("ts,value\n" + "".join(f"{T0 + i},\n" for i in range(200)), [], "no numeric feature column"),
        ("ts,value\n" + "".join(f"{T0 + i},\n" for i in range(200)), ["--features", "value"], "no usable data rows"),
        ("ts,value\n" + "".join(f"{T0 + i},{i % 7}\n" for i in range(50)), [], "fit needs at least"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, extra: list[str], message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    assert main(["fit", str(csv), "--out", str(tmp_path / "bad.onnx"), *FAST, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "bad.onnx").exists()


def test_a_column_of_row_numbers_is_not_a_timestamp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ts` 0, 1, 2, ... (before 2000: the daemon rejects them): the column is ignored, no row is lost."""
    values = [f"{v:.4f}" for v in np.sin(np.arange(200) / 7)]
    model, out = fit(write(tmp_path / "rownumbers.csv", values, ts=list(range(200))), capsys)
    assert "data: column 'ts' holds no timestamp the daemon reads: ignored" in out
    meta = load_model(model).meta
    assert meta.sample_interval_s is None
    assert meta.provenance["fit"]["train_rows"] + meta.provenance["fit"]["held_out_rows"] == 200


def test_a_stream_too_short_to_train_on_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several series in one file (a `stream` column): one with 20 rows does not stop the others."""
    rows = [f"m1,{T0 + 60 * i},{np.sin(i / 7):.4f}" for i in range(200)]
    rows += [f"m2,{T0 + 60 * i},{np.cos(i / 7):.4f}" for i in range(20)]
    csv = tmp_path / "fleet.csv"
    csv.write_text("stream,ts,value\n" + "\n".join(rows) + "\n")
    model, out = fit(csv, capsys)
    assert "data: 1 stream(s) left out, too short to train on: {'m2': 20} rows" in out
    fitted = load_model(model).meta.provenance["fit"]
    assert fitted["train_rows"] + fitted["held_out_rows"] == 200
