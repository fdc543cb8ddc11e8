"""Encoder–decoder models: `export_torch(..., horizon=K)` → a step model whose every step outputs the
K-step forecast, equal to the source model's own rollout; the daemon publishes it as `forecast`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the export extra)")

from torch import nn  # noqa: E402

from edge_lstm.contract import ModelFormatError, parse_meta  # noqa: E402
from edge_lstm.onnx_model import load_model  # noqa: E402
from edge_lstm_export import export_torch  # noqa: E402
from edge_lstm_export.cli import main as export_main  # noqa: E402
from edge_lstm_export.errors import ExportError, ParityError, UnsupportedModelError  # noqa: E402
from edge_lstm_export.parity import generate_sequences  # noqa: E402

pytestmark = pytest.mark.export

FEATURES = ["temperature", "vibration", "current"]
K = 5


class Seq2Seq(nn.Module):
    """The worked example of docs/export.md: LSTM encoder, LSTM decoder, linear head, autoregressive."""

    def __init__(self, features: int = 3, hidden: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def decode(self, last: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], horizon: int) -> torch.Tensor:
        x, out = last, []
        for _ in range(horizon):
            y, state = self.decoder(x.unsqueeze(1), state)
            x = self.head(y[:, 0])
            out.append(x)
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor, horizon: int = K) -> torch.Tensor:
        _, state = self.encoder(x)
        return self.decode(x[:, -1], state, horizon)


def _model(seed: int = 0, **kw: int) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(**kw)


def test_seq2seq_export_matches_the_source_rollout_over_all_k_steps(tmp_path: Path) -> None:
    model = _model()
    report = export_torch(model, tmp_path / "s2s.onnx", features=FEATURES, horizon=K, sample_interval_s=10.0)
    assert report.parity.max_abs_error <= 1e-4
    assert report.parity.mode == "rollout"
    meta = report.meta
    assert meta["schema_version"] == 2 and meta["output"]["horizon"] == K
    loaded = load_model(tmp_path / "s2s.onnx")
    assert loaded.n_outputs == K * len(FEATURES)
    # Independent re-check: the served model, stepped over a sequence, forecasts what forward() says.
    seq = generate_sequences(3, sequences=2, steps=40, seed=7)
    states = [np.zeros((2, *s), np.float32) for s in loaded.state_shapes]
    for t in range(seq.shape[1]):
        y, states = loaded.step(seq[:, t], states)
    with torch.no_grad():
        expected = model(torch.from_numpy(seq)).numpy().reshape(2, -1)
    assert np.abs(y - expected).max() <= 1e-4


def test_gru_encoder_and_horizon_one(tmp_path: Path) -> None:
    class GruS2S(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.GRU(3, 8)  # time-major
            self.decoder = nn.GRU(3, 8)
            self.head = nn.Linear(8, 2)

        def decode(self, last: torch.Tensor, h: torch.Tensor, horizon: int) -> torch.Tensor:
            out = []
            for _ in range(horizon):  # conditioned on the last reading at every step, not autoregressive
                y, h = self.decoder(last.unsqueeze(0), h)
                out.append(self.head(y[0]))
            return torch.stack(out, dim=1)

    torch.manual_seed(1)
    names = ["temperature", "current"]
    r = export_torch(GruS2S(), tmp_path / "g.onnx", features=FEATURES, output_names=names, horizon=3)
    assert r.parity.max_abs_error <= 1e-4 and r.meta["output"]["horizon"] == 3
    r1 = export_torch(GruS2S(), tmp_path / "g1.onnx", features=FEATURES, output_names=names, horizon=1)
    assert r1.meta["schema_version"] == 1 and "horizon" not in r1.meta["output"]


def test_a_decode_that_peeks_outside_its_arguments_fails_parity(tmp_path: Path) -> None:
    class Leaky(Seq2Seq):
        def decode(self, last: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], horizon: int) -> torch.Tensor:
            return super().decode(last * 0.0 + 1.0 if last.shape[0] == 2 else last, state, horizon)

    with pytest.raises(ParityError, match="rollout"):
        export_torch(Leaky(), tmp_path / "x.onnx", features=FEATURES, horizon=K)
    assert not (tmp_path / "x.onnx").exists()


def test_refusals(tmp_path: Path) -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lstm(x)[0][:, -1, :3]

    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        export_torch(Plain(), tmp_path / "p.onnx", features=FEATURES, horizon=K)
    with pytest.raises(ExportError, match="int8"):
        export_torch(_model(), tmp_path / "q.onnx", features=FEATURES, horizon=K, quantize="int8")


def test_contract_versions() -> None:
    doc = {
        "schema_version": 2,
        "name": "m",
        "version": "1",
        "features": ["a"],
        "scaling": {"offset": [0.0], "scale": [1.0]},
        "output": {"kind": "forecast", "names": ["a"], "horizon": 4},
        "io": {"input": "x", "output": "y", "state": [{"input": "h", "output": "h2"}]},
    }
    assert parse_meta(json.dumps(doc)).output.columns == 4
    with pytest.raises(ModelFormatError, match="needs schema_version 2"):
        parse_meta(json.dumps({**doc, "schema_version": 1}))
    with pytest.raises(ModelFormatError, match="only for forecast"):
        parse_meta(json.dumps({**doc, "output": {"kind": "score", "names": ["s"], "horizon": 4}}))
    old = {**doc, "schema_version": 1, "output": {"kind": "forecast", "names": ["a"]}}
    assert parse_meta(json.dumps(old)).output.steps == 1
    with pytest.raises(ModelFormatError, match="upgrade edge-lstm"):
        parse_meta(json.dumps({**doc, "schema_version": 3}))


def test_cli_horizon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save(_model().state_dict(), tmp_path / "w.pt")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rc = export_main(
        [
            "torch",
            "--factory",
            "test_seq2seq:Seq2Seq",
            "--weights",
            str(tmp_path / "w.pt"),
            "--features",
            ",".join(FEATURES),
            "--horizon",
            "3",
            "--out",
            str(tmp_path / "c.onnx"),
        ]
    )
    assert rc == 0
    assert load_model(tmp_path / "c.onnx").meta.output.horizon == 3
