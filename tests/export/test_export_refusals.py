"""What cannot stream (or cannot be read) is refused with its own error, naming the module/column, and
nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch
from torch import nn

from edge_lstm_export import (
    DataError,
    FeatureMismatchError,
    ParityError,
    UnsupportedModelError,
    export_torch,
)
from edge_lstm_export.csvdata import read_csv

pytestmark = pytest.mark.export

FEATURES = ["a", "b", "c"]


class Holder(nn.Module):
    def __init__(self, rnn: nn.Module, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential()
        self.block.add_module("rnn", rnn)
        self.fc = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.block.get_submodule("rnn")(x)[0])
        return result


class Attention(nn.Module):
    """Self-attention over all steps: step t sees steps after t — not a streaming model."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        weights = torch.softmax(h @ h.transpose(1, 2) / 8**0.5, dim=-1)
        result: torch.Tensor = self.fc(weights @ h)
        return result


class TorchAttention(nn.Module):
    """nn.MultiheadAttention's eval fast path has no ONNX export: a clear error, not a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        result: torch.Tensor = self.fc(self.att(h, h, h)[0])
        return result


class Reversed(nn.Module):
    """Runs the LSTM over the reversed sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.lstm(x.flip(1))[0][:, -1])
        return result


class MeanPool(nn.Module):
    """Averages the LSTM output over time: the last step depends on all earlier outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.fc(self.lstm(x)[0].mean(dim=1))
        return result


class CellLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(3, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(x.shape[0], 8)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        result: torch.Tensor = self.fc(h)
        return result


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.lstm(self.lstm(x)[0])[0]
        return result


def test_bidirectional_is_refused_naming_the_module(tmp_path: Path) -> None:
    model = Holder(nn.LSTM(3, 8, batch_first=True, bidirectional=True), 16)
    with pytest.raises(UnsupportedModelError, match=r"'block\.rnn'.*bidirectional"):
        export_torch(model, tmp_path / "m.onnx", features=FEATURES)
    assert not (tmp_path / "m.onnx").exists()


def test_bidirectional_gru_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"GRU.*bidirectional"):
        export_torch(
            Holder(nn.GRU(3, 8, batch_first=True, bidirectional=True), 16), tmp_path / "m.onnx", features=FEATURES
        )


def test_proj_size_is_refused_naming_the_module(tmp_path: Path) -> None:
    model = Holder(nn.LSTM(3, 8, batch_first=True, proj_size=4), 4)
    with pytest.raises(UnsupportedModelError, match=r"'block\.rnn'.*proj_size=4"):
        export_torch(model, tmp_path / "m.onnx", features=FEATURES)


@pytest.mark.parametrize("model_cls", [Attention, Reversed, MeanPool])
def test_time_mixing_forward_fails_parity(model_cls: type[nn.Module], tmp_path: Path) -> None:
    torch.manual_seed(0)
    with pytest.raises(ParityError, match="mixes time steps") as err:
        export_torch(model_cls(), tmp_path / "m.onnx", features=FEATURES)
    assert err.value.max_abs_error > 1e-4
    assert not (tmp_path / "m.onnx").exists()


def test_unexportable_op_is_a_clear_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedModelError, match="torch.onnx cannot export the step model: .*attention"):
        export_torch(TorchAttention(), tmp_path / "m.onnx", features=FEATURES)
    printed = capfd.readouterr()
    assert "Torch IR graph" not in printed.err + printed.out  # the exporter's IR dump is not shown


def test_cell_loop_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"'cell' \(LSTMCell\)"):
        export_torch(CellLoop(), tmp_path / "m.onnx", features=FEATURES)


def test_module_called_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="called more than once"):
        export_torch(Twice(), tmp_path / "m.onnx", features=FEATURES)


def test_no_recurrent_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="no nn.LSTM"):
        export_torch(nn.Linear(3, 3), tmp_path / "m.onnx", features=FEATURES)


def test_wrong_feature_count_is_refused(tmp_path: Path) -> None:
    model = Holder(nn.LSTM(3, 8, batch_first=True), 8)
    with pytest.raises(FeatureMismatchError, match=r"does not accept 4 features.*input_size=3"):
        export_torch(model, tmp_path / "m.onnx", features=["a", "b", "c", "d"])


def test_forecast_output_count_must_match_or_be_named(tmp_path: Path) -> None:
    class TwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 8, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.fc(self.lstm(x)[0])
            return result

    with pytest.raises(Exception, match="needs output_names"):
        export_torch(TwoOut(), tmp_path / "m.onnx", features=FEATURES)
    report = export_torch(TwoOut(), tmp_path / "m.onnx", features=FEATURES, output_names=["c", "a"])
    assert report.meta["output"]["names"] == ["c", "a"]


def test_csv_missing_column_names_it(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("ts,a,b\n1,1,2\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['c'\]"):
        read_csv(p, FEATURES)


def test_csv_non_numeric_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("ts,a,b,c\n1,1,2,3\n2,1,oops,3\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'oops' is not a number"):
        read_csv(p, FEATURES)


def test_csv_streams_are_split(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("stream,ts,a,b,c\nm1,1,1,2,3\nm2,1,4,5,6\nm1,2,7,8,9\n")
    data = read_csv(p)
    assert data.features == FEATURES
    np.testing.assert_array_equal(data.streams["m1"], [[1, 2, 3], [7, 8, 9]])


def test_calibration_needs_enough_data(tmp_path: Path) -> None:
    model = Holder(nn.LSTM(3, 8, batch_first=True), 8)
    # 35 rows minus the 10-step warm-up leave 25 scored readings: fewer than the 30 calibration needs.
    with pytest.raises(DataError, match="only 25 scored readings .* at least 30"):
        export_torch(model, tmp_path / "m.onnx", features=FEATURES, calibrate=np.ones((35, 3)))


def test_unused_recurrent_module_is_refused(tmp_path: Path) -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.LSTM(3, 3, batch_first=True)
            self.spare = nn.GRU(3, 3, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.used(x)[0]
            return result

    with pytest.raises(UnsupportedModelError, match=r"'spare' \(GRU\) is not called"):
        export_torch(Unused(), tmp_path / "m.onnx", features=FEATURES)


def test_calibration_draws_progress_on_a_terminal_only(tmp_path: Path) -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    data = np.random.default_rng(0).normal(size=(120, 3))
    tty, pipe = Terminal(), io.StringIO()
    export_torch(Holder(nn.LSTM(3, 8, batch_first=True), 8), tmp_path / "a.onnx", features=FEATURES, calibrate=data,
                 progress=tty)  # fmt: skip
    export_torch(Holder(nn.LSTM(3, 8, batch_first=True), 8), tmp_path / "b.onnx", features=FEATURES, calibrate=data,
                 progress=pipe)  # fmt: skip
    assert "calibrating: 100 % of 120 steps" in tty.getvalue() and pipe.getvalue() == ""
