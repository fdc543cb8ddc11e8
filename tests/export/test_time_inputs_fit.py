"""`fit --time-inputs`: the model sees each reading's phase in a day and a week after its features, and
the daemon's engine computes exactly the inputs `fit` trained on, from the reading's ts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

from edge_lstm import load_model
from edge_lstm.cli.replay import replay
from edge_lstm.result import Result
from edge_lstm.timeinputs import time_columns

torch = pytest.importorskip("torch", reason="needs torch (the export extra)")

from edge_lstm_export.cli import main  # noqa: E402

pytestmark = pytest.mark.export

T0 = 1_396_310_400  # 2014-04-01 00:00:00 UTC
FAST = ["--epochs", "4", "--hidden", "8", "--quiet"]


def daily(path: Path, n: int = 600) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ts = T0 + 300.0 * np.arange(n)
    values = 20 + 10 * np.sin(2 * np.pi * ts / 86400) + rng.normal(0, 0.5, n)
    path.write_text("timestamp,value\n" + "".join(f"{t:.0f},{v:.4f}\n" for t, v in zip(ts, values)))
    return path, ts, values


def test_the_engine_feeds_the_model_the_inputs_fit_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, ts, values = daily(tmp_path / "daily.csv")
    out = tmp_path / "t.onnx"
    assert main(["fit", str(csv), "--out", str(out), "--time-inputs", "day,week", *FAST]) == 0, capsys.readouterr()
    model = load_model(out)
    meta = model.meta
    assert meta.time_inputs == ["day", "week"] and meta.schema_version == 3 and meta.input_columns == 5
    assert meta.calibration is not None and meta.calibration.threshold > 0
    results: list[Result] = []
    with open(csv) as f:
        summary = replay(f, model, lambda r, line: results.append(r))
    assert summary.readings == len(ts)
    # The same readings stepped by hand: scaled value, then the time columns of its ts.
    u = (values[:, None] - meta.scaling.offset[0]) / meta.scaling.scale[0]
    x = np.concatenate([u, time_columns(ts, ["day", "week"])], axis=1).astype(np.float32)
    states = [np.zeros((1, *shape), np.float32) for shape in model.state_shapes]
    by_hand = []
    for row in x:
        y, states = model.step(row[None], states)
        by_hand.append(float(y[0, 0]) * meta.scaling.scale[0] + meta.scaling.offset[0])
    served = [r.prediction[0] for r in results]
    np.testing.assert_allclose(served, by_hand, rtol=0, atol=1e-4)


def test_a_model_without_time_inputs_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, _, _ = daily(tmp_path / "daily.csv", 200)
    out = tmp_path / "plain.onnx"
    assert main(["fit", str(csv), "--out", str(out), "--time-inputs", "none", *FAST]) == 0, capsys.readouterr()
    meta = load_model(out).meta
    assert meta.time_inputs is None and meta.schema_version == 1 and meta.input_columns == 1


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("value\n" + "".join(f"{np.sin(i / 5):.3f}\n" for i in range(200)), [], "need a timestamp column"),
        (None, ["--horizon", "3"], "time inputs are for next-step models"),
        (None, ["--time-inputs", "month"], "expected day, week, day,week or none"),
    ],
)
def test_time_inputs_refusals_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, extra: list[str], message: str
) -> None:
    csv = tmp_path / "d.csv"
    if content is None:
        daily(csv, 200)
    else:
        csv.write_text(content)
    args = ["fit", str(csv), "--out", str(tmp_path / "x.onnx"), "--time-inputs", "day", *FAST, *extra]
    with pytest.raises(SystemExit) if "month" in extra else contextlib.nullcontext():
        assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
