"""Issue 3's "done when": a PyTorch model nobody wrote for this tool, exported with one call, is served
by `edge-lstm run` unchanged, and the scores published over MQTT are the source model's forecasts."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch
from torch import nn

from edge_lstm_export import export_torch

pytestmark = [pytest.mark.export, pytest.mark.integration]

FEATURES = ["temperature", "vibration", "current"]
OFFSET = [40.0, 0.5, 10.0]
SCALE = [4.0, 0.1, 2.0]
T0 = 1_764_230_400


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 12, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        result: torch.Tensor = self.norm(out)
        return result


class UserForecaster(nn.Module):
    """Written the usual way: whole sequences from zero state, a head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(self.drop(self.encoder(x)[:, -1]))
        return result


def readings(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    base = np.asarray(OFFSET) + np.asarray(SCALE) * np.sin(t / 7.0 + np.arange(3))
    noisy: np.ndarray = base + rng.normal(0, 0.05, size=(n, 3)) * np.asarray(SCALE)
    return noisy


def test_exported_user_model_is_served_by_the_daemon(
    tmp_path: Path,
    broker: PrivateBroker,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    torch.manual_seed(0)
    model = UserForecaster()
    path = tmp_path / "user.onnx"
    report = export_torch(
        model,
        path,
        features=FEATURES,
        output="forecast",
        scaling={"offset": OFFSET, "scale": SCALE},
        calibrate=[readings(300, s) for s in range(3)],
        warmup_steps=3,
        name="user-forecaster",
        version="2.1.0",
    )
    assert report.max_abs_error <= 1e-5

    daemon = run_daemon(daemon_config(broker, path, tmp_path / "state"))
    daemon.wait_ready()
    col = collector(broker.port, ["edge-lstm/scores/#"])
    pub = publisher(broker.port)
    series = {"press-1": readings(25, 10), "press-2": readings(25, 11)}
    for t in range(25):
        for stream, x in series.items():
            pub.send(f"sensors/{stream}", reading_payload(T0 + t, **dict(zip(FEATURES, x[t].tolist()))))
    pub.flush()
    got = col.wait_count("edge-lstm/scores/", 50, timeout=30)
    assert daemon.terminate() == 0

    model.eval()
    off, scale = np.asarray(OFFSET), np.asarray(SCALE)
    for stream, x in series.items():
        results = sorted((r for r in got if r["stream"] == stream), key=lambda r: r["ts"])
        assert [r["ts"] for r in results] == [T0 + t for t in range(25)]
        with torch.no_grad():
            scaled = torch.tensor((x - off) / scale, dtype=torch.float32)[None]
            # The source model's forecast after each prefix of the sequence, unscaled to feature units.
            want = np.stack([model(scaled[:, : t + 1])[0].numpy() for t in range(25)]) * scale + off
        for t, r in enumerate(results):
            assert r["model"] == {"name": "user-forecaster", "version": "2.1.0"}
            pred = np.asarray([r["prediction"][f] for f in FEATURES])
            # parity bound, in feature units, plus the payload's 6 significant digits
            assert np.all(np.abs(pred - want[t]) <= 2e-5 * scale + 5e-6 * np.abs(want[t]))
            assert r["warming_up"] == (t < 3)
            assert math.isfinite(r["score"]) and r["score"] >= 0 and r["threshold"] > 0


class Seq2SeqForecaster(nn.Module):
    """An encoder-decoder model (docs/export.md, "Multi-step forecasts"): LSTM encoder, autoregressive
    LSTM decoder, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.LSTM(3, 12, batch_first=True)
        self.decoder = nn.LSTM(3, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def decode(self, last: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], horizon: int) -> torch.Tensor:
        x, out = last, []
        for _ in range(horizon):
            y, state = self.decoder(x.unsqueeze(1), state)
            x = self.head(y[:, 0])
            out.append(x)
        return torch.stack(out, dim=1)


def test_exported_seq2seq_model_publishes_forecasts_over_mqtt(
    tmp_path: Path,
    broker: PrivateBroker,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    torch.manual_seed(0)
    model = Seq2SeqForecaster().eval()
    path = tmp_path / "s2s.onnx"
    k = 6
    export_torch(
        model,
        path,
        features=FEATURES,
        scaling={"offset": OFFSET, "scale": SCALE},
        horizon=k,
        sample_interval_s=1.0,
        name="s2s",
    )
    daemon = run_daemon(daemon_config(broker, path, tmp_path / "state"))
    daemon.wait_ready()
    col = collector(broker.port, ["edge-lstm/scores/#"])
    pub = publisher(broker.port)
    x = readings(12, 5)
    for t in range(12):
        pub.send("sensors/press-9", reading_payload(T0 + t, **dict(zip(FEATURES, x[t].tolist()))))
    pub.flush()
    got = sorted(col.wait_count("edge-lstm/scores/", 12, timeout=30), key=lambda r: r["ts"])
    assert daemon.terminate() == 0
    off, scale = np.asarray(OFFSET), np.asarray(SCALE)
    with torch.no_grad():
        scaled = torch.tensor((x - off) / scale, dtype=torch.float32)[None]
        _, state = model.encoder(scaled)
        want = model.decode(scaled[:, -1], state, k)[0].numpy() * scale + off  # [K, 3], feature units
    last = got[-1]
    assert last["forecast"]["ts"] == [T0 + 11 + j for j in range(1, k + 1)]
    for i, f in enumerate(FEATURES):
        got_f = np.asarray(last["forecast"][f])
        assert np.all(np.abs(got_f - want[:, i]) <= 2e-5 * scale[i] + 5e-6 * np.abs(want[:, i]))  # + 6 digits
        assert last["prediction"][f] == last["forecast"][f][0]
