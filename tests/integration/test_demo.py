"""`edge-lstm demo` end to end: private mosquitto, simulated fleet, the daemon, results over MQTT."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_lstm import Engine, Reading, load_model
from edge_lstm.demo.simulate import FEATURES, Machine, normal_series
from edge_lstm.onnx_model import default_model_path

pytestmark = pytest.mark.integration


def make_persistence_model(path: Path, warmup: int = 10) -> Path:
    """A step model that forecasts 'the next reading equals this one' (its LSTM state is carried but
    unused), calibrated on the simulator's normal data. A reference detector independent of the
    packaged model: it proves the demo's detection accounting, whatever the packaged model does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, nf = 4, len(FEATURES)
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array((rng.standard_normal((1, 4 * h, nf)) * 0.3).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((1, 4 * h, h)) * 0.3).astype(np.float32), "R"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes0"], ["xs"]),
        helper.make_node("Transpose", ["h_in"], ["h0"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["c_in"], ["c0"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xs", "W", "R", "", "", "h0", "c0"], ["Y", "Yh", "Yc"], hidden_size=h),
        helper.make_node("Transpose", ["Yh"], ["h_out"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["Yc"], ["c_out"], perm=[1, 0, 2]),
        helper.make_node("Identity", ["x"], ["y"]),
    ]
    f = TensorProto.FLOAT
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "persistence",
        [vi("x", f, ["batch", nf]), vi("h_in", f, ["batch", 1, h]), vi("c_in", f, ["batch", 1, h])],
        [vi("y", f, ["batch", nf]), vi("h_out", f, ["batch", 1, h]), vi("c_out", f, ["batch", 1, h])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = np.concatenate([normal_series(1000, seed) for seed in range(5)])
    res = np.concatenate([np.diff(normal_series(2000, 100 + s), axis=0) for s in range(10)])
    mu, sd = res.mean(0), res.std(0)
    z = (res - mu) / sd
    scores = np.sqrt((z * z).mean(1))
    meta = {
        "schema_version": 1,
        "name": "persistence",
        "version": "0.0.1",
        "features": list(FEATURES),
        "scaling": {"offset": data.mean(0).tolist(), "scale": data.std(0).tolist()},
        "output": {"kind": "forecast", "names": list(FEATURES)},
        "io": {
            "input": "x",
            "output": "y",
            "state": [{"input": "h_in", "output": "h_out"}, {"input": "c_in", "output": "c_out"}],
        },
        "calibration": {
            "residual_mean": mu.tolist(),
            "residual_std": sd.tolist(),
            "threshold": float(np.quantile(scores, 0.9995)),
            "quantile": 0.9995,
            "samples": int(len(scores)),
        },
        "sample_interval_s": 1.0,
        "warmup_steps": warmup,
        "provenance": {"tool": "tests/integration/test_demo.py persistence reference"},
    }
    helper.set_model_props(model, {"edge_lstm": json.dumps(meta)})
    onnx.save(model, str(path))
    return path


def run_demo(*args: str, timeout: float = 90) -> tuple[str, dict[str, float]]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "demo", "--no-live", *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode == 2 and "mosquitto" in proc.stderr and "not found" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    nums: dict[str, float] = {}
    for key, pattern in {
        "published": r"readings published (\d+)",
        "received": r"results received (\d+)",
        "processed": r"daemon \(its own counters\): (\d+) readings processed",
        "injected": r"anomalies injected (\d+), detected",
        "detected": r"anomalies injected \d+, detected (\d+)",
        "false_alarms": r"false alarms: (\d+) flagged readings",
        "normal": r"% of (\d+) normal readings",
        "rate": r"rate ([\d,]+) readings/s",
        "raised": r"Alarm entities\): (\d+) raised",
        "cleared": r"Alarm entities\): \d+ raised, (\d+) cleared",
    }.items():
        m = re.search(pattern, out)
        assert m, f"summary lacks {key!r}:\n{out}"
        nums[key] = float(m.group(1).replace(",", ""))
    return out, nums


def readme_demo_sample() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("=== edge-lstm demo summary")
    return readme[start : readme.index("```", start)]


def summary_shape(text: str) -> list[str]:
    """The summary's lines with numbers as N and each kind's line as one `  KIND` line: its layout."""
    lines = text[text.index("=== edge-lstm demo summary") :].strip().splitlines()
    shapes = [re.sub(r"[0-9][0-9,.]*", "N", re.sub(r"^  [a-z]+ +", "  KIND ", line)) for line in lines]
    return [line for i, line in enumerate(shapes) if not (line.startswith("  KIND") and shapes[i - 1] == line)]


def calibrated_well(path: Path) -> bool:
    """Does the model separate the simulator's anomalies from its normal data? (false alarms on normal
    machines under 1%, and most spikes flagged) Only then does the demo test insist on detections."""
    model = load_model(path)
    if model.meta.calibration is None or list(model.meta.features) != list(FEATURES):
        return False
    engine = Engine(model)
    n, warm = 300, max(model.meta.warmup_steps, 1) + 5
    flags = scored = 0
    for seed in range(8):
        out = engine.process(
            [Reading(f"n{seed}", 1e9 + t, tuple(v)) for t, v in enumerate(normal_series(n, 10_000 + seed))]
        )
        flags += sum(r.anomaly for r in out[warm:])  # type: ignore[union-attr]
        scored += n - warm
    caught = 0
    for seed in range(8):
        m = Machine(20_000 + seed)
        readings = []
        for t in range(warm + 20):
            if t == warm + 10:
                m.inject("spike", 1)
            readings.append(Reading(f"s{seed}", 1e9 + t, m.step()))
        out = engine.process(readings)
        caught += any(r.anomaly for r in out[warm + 10 : warm + 12])  # type: ignore[union-attr]
    return flags / scored < 0.01 and caught >= 6


@pytest.mark.slow  # ~15 s here: `./dev quick` skips it
def test_demo_with_packaged_model() -> None:
    if not default_model_path().is_file():
        pytest.skip(f"the packaged model is not built yet ({default_model_path()})")
    out, n = run_demo("--seconds", "6", "--streams", "20", "--rate", "20", "--seed", "1")
    assert summary_shape(out) == summary_shape(readme_demo_sample()), "README's demo sample has another layout"
    assert n["received"] > 0 and n["processed"] > 0
    assert n["received"] == n["published"] == n["processed"], out
    assert n["injected"] > 0, out
    # What the daemon is for: alarms raised and cleared, each printed at the moment it happens.
    assert n["raised"] >= 1 and n["cleared"] >= 1, out
    assert len(re.findall(r"^  \d\d:\d\d:\d\d  ALARM RAISED ", out, re.M)) == n["raised"], out
    assert len(re.findall(r"^  \d\d:\d\d:\d\d  alarm cleared ", out, re.M)) == n["cleared"], out
    if calibrated_well(default_model_path()):
        assert n["detected"] > 0, out
        assert n["false_alarms"] <= 0.02 * n["normal"], out


@pytest.mark.slow  # ~14 s here: `./dev quick` skips it
def test_demo_detects_with_a_reference_model(tmp_path: Path) -> None:
    model = make_persistence_model(tmp_path / "persistence.onnx")
    assert calibrated_well(model)
    out, n = run_demo("--seconds", "5", "--streams", "24", "--rate", "20", "--model", str(model))
    assert n["received"] == n["published"] == n["processed"] > 0, out
    assert n["injected"] >= 8, out
    assert n["detected"] >= 0.75 * n["injected"], out
    assert n["false_alarms"] <= 0.02 * n["normal"], out
    assert "daemon online (edge-lstm/status = online)" in out
    assert re.search(r"^  spike\s+\d+/\d+", out, re.M), out


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = dict(seconds=1.0, streams=2, rate=10.0, seed=0, no_live=True, model=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_missing_mosquitto_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_lstm.cli import demo
    from edge_lstm.demo import broker

    def missing() -> str:
        raise broker.BrokerUnavailable(
            "the mosquitto broker binary was not found. Install it with `sudo apt-get install mosquitto`"
        )

    monkeypatch.setattr(broker, "find_mosquitto", missing)
    model = make_persistence_model(tmp_path / "p.onnx")
    assert demo.main(_args(model=str(model))) == 2
    err = capsys.readouterr().err
    assert "apt-get install mosquitto" in err


def test_model_with_other_features_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from support.models import make_step_model

    from edge_lstm.cli import demo

    model = make_step_model(tmp_path / "abc.onnx", features=("a", "b", "c"))
    assert demo.main(_args(model=str(model))) == 2
    assert "simulated machines" in capsys.readouterr().err
