"""Encoder–decoder models: `export_torch(..., horizon=K)` → a step model whose every step outputs the
K-step forecast, equal to the source model's own rollout; the daemon publishes it as `forecast`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.outcomes import present, scored

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch
from torch import nn

from edge_lstm.contract import ModelFormatError, parse_meta
from edge_lstm.engine import Engine
from edge_lstm.onnx_model import load_model
from edge_lstm.reading import Reading
from edge_lstm.result import Result, encode
from edge_lstm_export import export_torch
from edge_lstm_export.cli import main as export_main
from edge_lstm_export.errors import ParityError, UnsupportedModelError
from edge_lstm_export.parity import generate_sequences

pytestmark = pytest.mark.export

FEATURES = ["temperature", "vibration", "current"]
K = 5
T0 = 1_764_230_400.0


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
            result: torch.Tensor = self.lstm(x)[0][:, -1, :3]
            return result

    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        export_torch(Plain(), tmp_path / "p.onnx", features=FEATURES, horizon=K)


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


def _forecast_of(results: list[Result]) -> dict[str, list[float]]:
    f = results[-1].forecast
    assert f is not None
    return f


def test_the_engine_publishes_the_forecast_with_expected_times(tmp_path: Path) -> None:
    model = _model()
    export_torch(model, tmp_path / "s2s.onnx", features=FEATURES, horizon=K, sample_interval_s=10.0)
    engine = Engine(load_model(tmp_path / "s2s.onnx"))
    seq = generate_sequences(3, sequences=1, steps=12, seed=3)[0].astype(np.float64)
    rs = [scored(engine.process([Reading("s", T0 + 10 * t, tuple(seq[t]))])[0]) for t in range(len(seq))]
    f = _forecast_of(rs)
    assert f["ts"] == [T0 + 110 + 10 * k for k in range(1, K + 1)]
    with torch.no_grad():
        expected = model(torch.from_numpy(seq[None].astype(np.float32)))[0].numpy()  # identity scaling
    for j, name in enumerate(FEATURES):
        assert np.allclose(f[name], expected[:, j], atol=1e-4)
    # prediction is the forecast's first step (the next reading), and scoring uses it
    assert rs[-1].prediction == [f[n][0] for n in FEATURES]
    payload = json.loads(encode(rs[-1]))

    def six(v: float) -> float:  # published to 6 significant digits; times whole
        return float(f"{v:.6g}")

    assert payload["forecast"] == {k: v if k == "ts" else [six(x) for x in v] for k, v in f.items()}
    assert payload["prediction"] == {n: six(v) for n, v in zip(FEATURES, rs[-1].prediction or [])}
    assert payload == json.loads(json.dumps(rs[-1].to_dict()))


def test_without_a_sample_interval_the_times_follow_the_last_gap(tmp_path: Path) -> None:
    export_torch(_model(), tmp_path / "s2s.onnx", features=FEATURES, horizon=2)
    engine = Engine(load_model(tmp_path / "s2s.onnx"))
    first = engine.process([Reading("s", T0, (0.0, 0.0, 0.0))])[0]
    assert isinstance(first, Result) and first.forecast is not None and "ts" not in first.forecast
    second = engine.process([Reading("s", T0 + 3, (0.1, 0.0, 0.0))])[0]
    assert isinstance(second, Result) and second.forecast is not None
    assert second.forecast["ts"] == [T0 + 6, T0 + 9]


def test_the_daemon_serves_a_seq2seq_model_with_forecast(tmp_path: Path) -> None:
    from unit.service.test_daemon_unit import make_daemon, reading

    export_torch(_model(), tmp_path / "s2s.onnx", features=FEATURES, horizon=K, sample_interval_s=1.0)
    d, link, _, _ = make_daemon(tmp_path / "s2s.onnx", tmp_path)
    for t in range(3):
        link.deliver("sensors/pump", reading(T0 + t, 0.1 * t, 0.2, 0.3))
    d.iteration(0.01)
    results = [json.loads(s.payload) for s in link.results()]
    assert len(results) == 3
    last = results[-1]
    assert sorted(last["forecast"]) == sorted([*FEATURES, "ts"])
    assert all(len(v) == K for v in last["forecast"].values())
    assert last["forecast"]["ts"] == [T0 + 2 + k for k in range(1, K + 1)]
    assert last["prediction"] == {n: last["forecast"][n][0] for n in FEATURES}


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


def test_calibration_scores_the_first_forecast_step(tmp_path: Path) -> None:
    data = list(generate_sequences(3, sequences=2, steps=200, seed=5).astype(np.float64))
    r = export_torch(_model(), tmp_path / "c.onnx", features=FEATURES, horizon=4, calibrate=data)
    assert r.calibration is not None and r.calibration.threshold > 0
    assert r.parity.data == "generated+given" and r.parity.max_abs_error <= 1e-4
    assert load_model(tmp_path / "c.onnx").meta.calibration is not None


def test_fit_horizon_trains_a_k_step_forecaster_that_beats_holding_the_last_value(tmp_path: Path) -> None:
    from edge_lstm_export.fit import FitConfig, fit_arrays

    rng = np.random.default_rng(0)
    t = np.arange(600)
    streams = [
        np.stack([20 + 2 * np.sin(t / 8 + p), 0.3 + 0.1 * np.cos(t / 8 + p)], axis=1) + rng.normal(0, 0.02, (600, 2))
        for p in (0.0, 1.0)
    ]
    cfg = FitConfig(hidden=16, epochs=15, window=32, horizon=4)
    result = fit_arrays(streams, tmp_path / "f.onnx", features=["temp", "vib"], config=cfg, progress=None)
    meta = load_model(tmp_path / "f.onnx").meta
    assert meta.output.horizon == 4 and meta.provenance["fit"]["horizon"] == 4
    assert result.report.parity.max_abs_error <= 1e-4 and meta.calibration is not None
    engine = Engine(load_model(tmp_path / "f.onnx"))
    s = streams[1]
    res = [scored(engine.process([Reading("s", T0 + i, tuple(s[i]))])[0]) for i in range(len(s) - 4)]
    err = [
        np.abs(np.asarray(present(r.forecast)["temp"]) - s[i + 1 : i + 5, 0]).mean()
        for i, r in enumerate(res)
        if i > 400
    ]
    naive = [np.abs(s[i, 0] - s[i + 1 : i + 5, 0]).mean() for i in range(401, len(s) - 4)]
    assert np.mean(err) < 0.5 * np.mean(naive)


def test_fit_cli_horizon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.arange(300)
    csv = tmp_path / "n.csv"
    csv.write_text("a,b\n" + "".join(f"{np.sin(i / 7):.4f},{np.cos(i / 7):.4f}\n" for i in t))
    args = ["fit", str(csv), "--out", str(tmp_path / "f.onnx"), "--epochs", "2", "--hidden", "8", "--quiet"]
    assert export_main([*args, "--horizon", "3", "--sample-interval", "5"]) == 0
    meta = load_model(tmp_path / "f.onnx").meta
    assert meta.output.horizon == 3 and meta.schema_version == 2 and meta.sample_interval_s == 5
    assert export_main([*args, "--horizon", "100"]) == 2
    assert "--horizon 100 needs at least" in capsys.readouterr().err


def test_inspect_shows_the_horizon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_lstm.cli import main as cli

    export_torch(_model(), tmp_path / "s.onnx", features=FEATURES, horizon=3)
    assert cli(["inspect", str(tmp_path / "s.onnx")]) == 0
    assert "horizon 3: a 3-step forecast per reading" in capsys.readouterr().out
    assert cli(["inspect", str(tmp_path / "s.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"]["horizon"] == 3
