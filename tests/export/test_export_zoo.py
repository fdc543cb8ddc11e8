"""A zoo of PyTorch models nobody wrote for edge-lstm: each exports in one call, passes parity, loads in
the daemon's loader, and the daemon's Engine reproduces the source model's own forward."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_lstm import Engine, Reading, Result, load_model

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch
from torch import nn

from edge_lstm_export import export_torch

pytestmark = pytest.mark.export

F = 3
FEATURES = ["temp", "vibration", "current"]
OFFSET = [40.0, 0.5, 10.0]
SCALE = [5.0, 0.1, 2.0]


class LastStep(nn.Module):
    """Classic: LSTM, Linear on the last step."""

    def __init__(self, layers: int = 1, batch_first: bool = True, hidden: int = 12) -> None:
        super().__init__()
        self.bf = batch_first
        self.lstm = nn.LSTM(F, hidden, layers, batch_first=batch_first)
        self.fc = nn.Linear(hidden, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        result: torch.Tensor = self.fc(out[:, -1] if self.bf else out[-1])
        return result


class EveryStepTimeFirst(nn.Module):
    """Time-first layout ([T, B, F]), 2 layers, a head over every step ([T, B, O])."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(F, 10, num_layers=2, dropout=0.1)
        self.out = nn.Linear(10, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        result: torch.Tensor = self.out(h)
        return result


class GruEveryStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(F, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.gru(x)[0])
        return result


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(F, 8)
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, dropout=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.lstm(torch.tanh(self.proj(x)))[0]
        return result


class NestedLastHead(nn.Module):
    """Recurrence two levels deep; LayerNorm/Dropout/Linear head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleDict({"enc": Encoder()})
        self.head = nn.Sequential(nn.LayerNorm(16), nn.Dropout(0.3), nn.Linear(16, F))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.body["enc"](x)[:, -1, :])
        return result


class NestedEveryStepHead(nn.Module):
    """Same body, head applied to every step, residual forecast (x + delta)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleDict({"enc": Encoder()})
        self.head = nn.Sequential(nn.LayerNorm(16), nn.Dropout(0.3), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, F))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = x + self.head(self.body["enc"](x))
        return result


class TwoInSequence(nn.Module):
    """An LSTM (batch-first) feeding a GRU (time-first): two recurrent modules, two layouts."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, 12, batch_first=True)
        self.norm = nn.LayerNorm(12)
        self.gru = nn.GRU(12, 8)
        self.fc = nn.Linear(8, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.lstm(x)
        b, _ = self.gru(self.norm(a).transpose(0, 1))
        result: torch.Tensor = self.fc(b[-1])
        return result


class ReturnsTuple(nn.Module):
    """Returns (output, hidden) the way many tutorials do."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(F, 8, batch_first=True)
        self.fc = nn.Linear(8, F)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, hidden = self.lstm(x)
        return self.fc(out), hidden


class ElmanScore(nn.Module):
    """A plain RNN producing one anomaly-score column (output kind 'score')."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(F, 8, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.fc(self.rnn(x)[0][:, -1]))


ZOO: dict[str, tuple[Callable[[], nn.Module], str, list[str]]] = {
    # name: (builder, output kind, expected state inputs)
    "lstm-1layer": (lambda: LastStep(), "forecast", ["state.lstm.h.in", "state.lstm.c.in"]),
    "lstm-3layer": (lambda: LastStep(layers=3), "forecast", ["state.lstm.h.in", "state.lstm.c.in"]),
    "lstm-time-first": (
        lambda: LastStep(layers=2, batch_first=False),
        "forecast",
        ["state.lstm.h.in", "state.lstm.c.in"],
    ),
    "lstm-every-step-time-first": (EveryStepTimeFirst, "forecast", ["state.rnn.h.in", "state.rnn.c.in"]),
    "gru-2layer": (GruEveryStep, "forecast", ["state.gru.h.in"]),
    "nested-last-head": (NestedLastHead, "forecast", ["state.body.enc.lstm.h.in", "state.body.enc.lstm.c.in"]),
    "nested-every-step-head": (
        NestedEveryStepHead,
        "forecast",
        ["state.body.enc.lstm.h.in", "state.body.enc.lstm.c.in"],
    ),
    "lstm-then-gru": (TwoInSequence, "forecast", ["state.lstm.h.in", "state.lstm.c.in", "state.gru.h.in"]),
    "returns-tuple": (ReturnsTuple, "forecast", ["state.lstm.h.in", "state.lstm.c.in"]),
    "rnn-score": (ElmanScore, "score", ["state.rnn.h.in"]),
}


def readings_for(rng: np.random.Generator, streams: int, steps: int) -> np.ndarray:
    """Feature-unit readings `[streams, steps, F]` around the scaling's operating point."""
    z = np.cumsum(rng.normal(0, 0.3, size=(streams, steps, F)), axis=1) * 0.5 + rng.normal(0, 0.5, (streams, steps, F))
    readings: np.ndarray = z * np.asarray(SCALE) + np.asarray(OFFSET)
    return readings


def source_per_step(model: nn.Module, scaled: np.ndarray, batch_first: bool) -> np.ndarray:
    """The source model's output for every step `[S, T, O]`, from its own forward on prefixes."""
    outs = []
    with torch.no_grad():
        for t in range(scaled.shape[1]):
            x = torch.from_numpy(scaled[:, : t + 1].astype(np.float32))
            y = model(x if batch_first else x.transpose(0, 1))
            y = y[0] if isinstance(y, tuple) else y
            if y.dim() == 3:
                y = y[:, -1] if batch_first else y[-1]
            outs.append(y.numpy())
    return np.stack(outs, axis=1)


@pytest.mark.slow  # 30-110 s each on a shared 2-core machine: `./dev quick` skips it
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_exports_and_engine_reproduces_source(name: str, tmp_path: Path) -> None:
    build, kind, state_inputs = ZOO[name]
    torch.manual_seed(zlib.crc32(name.encode()))  # stable across runs (hash() is salted)
    model = build()
    path = tmp_path / f"{name}.onnx"
    report = export_torch(
        model,
        path,
        features=FEATURES,
        output=kind,
        scaling={"offset": OFFSET, "scale": SCALE},
        warmup_steps=3,
        name=name,
    )
    print(f"{name}: parity max_abs_error {report.max_abs_error:.3g} ({report.parity.mode})")
    assert report.max_abs_error <= 1e-5
    assert report.parity.steps >= 300 and report.parity.sequences >= 4

    # One ONNX recurrent node per layer, no other inputs than x and the listed states.
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["x", *state_inputs]
    step = load_model(path)
    assert step.meta.name == name and step.meta.provenance["parity"]["max_abs_error"] == report.max_abs_error

    # The daemon's engine, fed two interleaved streams in feature units, vs the source forward.
    rng = np.random.default_rng(7)
    values = readings_for(rng, streams=2, steps=40)
    engine = Engine(step)
    batch = [Reading(f"m{s}", 1_700_000_000.0 + t, tuple(values[s, t])) for t in range(40) for s in range(2)]
    results = engine.process(batch)
    assert all(isinstance(r, Result) for r in results)
    scaled = (values - np.asarray(OFFSET)) / np.asarray(SCALE)
    batch_first = not isinstance(model, (EveryStepTimeFirst,)) and not (isinstance(model, LastStep) and not model.bf)
    expected = source_per_step(model, scaled, batch_first)
    got = np.asarray(
        [
            [
                r.prediction if kind == "forecast" else r.output  # type: ignore[union-attr]
                for r in results[s::2]
            ]
            for s in range(2)
        ]
    )
    if kind == "forecast":
        expected = expected * np.asarray(SCALE) + np.asarray(OFFSET)  # the engine publishes feature units
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(SCALE))
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.slow  # ~35 s on a shared 2-core machine: `./dev quick` skips it
def test_recurrent_nodes_one_per_layer(tmp_path: Path) -> None:
    export_torch(LastStep(layers=3), tmp_path / "m.onnx", features=FEATURES)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("LSTM") == 3


def test_given_parity_data_and_learned_scaling(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = [readings_for(rng, 1, 400)[0] for _ in range(3)]
    report = export_torch(LastStep(), tmp_path / "m.onnx", features=FEATURES, calibrate=data)
    assert report.parity.data == "generated+given" and report.parity.sequences > 4
    offset = report.meta["scaling"]["offset"]
    np.testing.assert_allclose(offset, np.concatenate(data).mean(axis=0))
