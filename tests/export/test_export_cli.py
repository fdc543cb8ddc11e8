"""The command line: factory + weights → model → `edge-lstm inspect` → `edge-lstm replay`; `fit`; and
every user error as one line on stderr with exit code 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_lstm import load_model
from edge_lstm.demo.simulate import FEATURES, normal_series

pytest.importorskip("torch", reason="needs torch (the export extra)")

import torch

from edge_lstm_export.cli import main

pytestmark = pytest.mark.export

BIN = Path(sys.executable).parent
FACTORY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.lstm = nn.LSTM(3, hidden, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 3))

    def forward(self, x):
        return x + self.head(self.lstm(x)[0])

def build():
    return Net()

def build_big():
    return Net(hidden=12)

NOT_A_FACTORY = 42

def broken():
    raise RuntimeError("no GPU here")
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "user_models.py").write_text(FACTORY)
    sys.path.insert(0, str(d))
    import user_models  # type: ignore[import-not-found]

    torch.manual_seed(0)
    torch.save(user_models.build().state_dict(), d / "weights.pt")
    torch.save(user_models.build_big().state_dict(), d / "big.pt")
    with open(d / "normal.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stream", "ts", *FEATURES])
        for k in range(2):
            for t, row in enumerate(normal_series(400, seed=k)):
                w.writerow([f"m{k}", 1_700_000_000 + t, *row])
    return d


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # ~48 s on a shared 2-core machine: `./dev quick` skips it
def test_round_trip_export_inspect_replay(workdir: Path) -> None:
    out = workdir / "cli-model.onnx"
    p = run(
        [
            str(BIN / "edge-lstm-export"),
            "torch",
            "--factory",
            "user_models:build",
            "--weights",
            "weights.pt",
            "--features",
            ",".join(FEATURES),
            "--out",
            str(out),
            "--calibrate",
            "normal.csv",
            "--name",
            "cli-model",
            "--version",
            "2.0.0",
            "--sample-interval",
            "1",
            "--warmup-steps",
            "5",
        ],
        workdir,
    )
    assert p.returncode == 0, p.stderr
    assert "parity: max_abs_error" in p.stdout and "calibration: threshold" in p.stdout

    p = run([str(BIN / "edge-lstm"), "inspect", str(out), "--json"], workdir)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    text = json.dumps(doc)
    assert "cli-model" in text and "2.0.0" in text and "temperature" in text
    meta = load_model(out).meta
    assert meta.calibration is not None and meta.calibration.threshold > 0
    assert meta.provenance["factory"] == "user_models:build"
    assert meta.warmup_steps == 5 and meta.sample_interval_s == 1.0

    scores = workdir / "scores.csv"
    p = run([str(BIN / "edge-lstm"), "replay", "normal.csv", "--model", str(out), "--out", str(scores)], workdir)
    assert p.returncode == 0, p.stderr
    with open(scores, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 800
    assert {"stream", "ts", "score", "anomaly", "prediction_temperature"} <= set(rows[0])
    warm = [float(r["score"]) for r in rows if r["warming_up"].lower() not in ("true", "1")]
    # Calibrated on this very data: the anomaly rate is about 1 - quantile.
    flagged = sum(r["anomaly"].lower() in ("true", "1") for r in rows)
    assert len(warm) > 700 and flagged <= 4


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edge-lstm-export: error:")
    return err


def _torch_args(workdir: Path, **over: str) -> list[str]:
    args = {
        "--factory": "user_models:build",
        "--weights": str(workdir / "weights.pt"),
        "--features": ",".join(FEATURES),
        "--out": str(workdir / "x.onnx"),
        **over,
    }
    return ["torch", *[t for kv in args.items() for t in kv]]


@pytest.mark.parametrize(
    "factory, message",
    [
        ("user_models.build", "must look like 'package.module:callable'"),
        ("no_such_pkg.mod:build", "cannot import module 'no_such_pkg.mod'"),
        ("user_models:nope", "has no attribute 'nope'"),
        ("user_models:broken", "raised RuntimeError: no GPU here"),
        ("user_models:NOT_A_FACTORY", "is not callable"),
    ],
)
def test_wrong_factory(workdir: Path, capsys: pytest.CaptureFixture[str], factory: str, message: str) -> None:
    assert message in _err(capsys, _torch_args(workdir, **{"--factory": factory}))


def test_mismatched_state_dict(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(capsys, _torch_args(workdir, **{"--weights": str(workdir / "big.pt")}))
    assert "does not match the model built by 'user_models:build'" in err and "size mismatch" in err


def test_weights_that_are_not_a_state_dict(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "junk.pt").write_bytes(b"not a torch file")
    assert "weights_only=True" in _err(capsys, _torch_args(workdir, **{"--weights": str(workdir / "junk.pt")}))
    # A whole pickled module: torch's refusal is paragraphs with terminal escapes; ours is one plain line.
    torch.save(torch.nn.LSTM(3, 4), workdir / "module.pt")
    err = _err(capsys, _torch_args(workdir, **{"--weights": str(workdir / "module.pt")}))
    assert "\x1b" not in err and "torch.save(model.state_dict(), path)" in err
    assert "not found" in _err(capsys, _torch_args(workdir, **{"--weights": str(workdir / "nope.pt")}))


def test_wrong_feature_count(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(capsys, _torch_args(workdir, **{"--features": "a,b"}))
    assert "does not accept 2 features" in err


def test_bad_calibration_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = workdir / "bad.csv"
    bad.write_text("ts,temperature,vibration,current\n1,20,0.3,9\n2,20,n/a,9\n")
    err = _err(capsys, _torch_args(workdir, **{"--calibrate": str(bad)}))
    assert "line 3, column 'vibration': 'n/a' is not a number" in err
    bad.write_text("ts,temperature,current\n1,20,9\n")
    assert "missing column(s) ['vibration']" in _err(capsys, _torch_args(workdir, **{"--calibrate": str(bad)}))
    assert not (workdir / "x.onnx").exists()


def test_fit_small_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = workdir / "fitted.onnx"
    rc = main(
        [
            "fit",
            str(workdir / "normal.csv"),
            "--out",
            str(out),
            "--hidden",
            "8",
            "--epochs",
            "3",
            "--window",
            "32",
            "--seed",
            "1",
            "--name",
            "tiny",
            "--sample-interval",
            "1",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "epoch   1/3" in cap.err and "held-out" in cap.err
    m = load_model(out)
    assert m.meta.name == "tiny" and m.meta.features == list(FEATURES)
    assert m.meta.calibration is not None and m.meta.calibration.threshold > 0
    assert m.meta.provenance["fit"]["held_out_rows"] == 160
    assert m.meta.provenance["parity"]["max_abs_error"] <= 1e-5
    scale = np.asarray(m.meta.scaling.scale)
    assert (scale > 0).all()
    # Deterministic for a seed: the same command gives the same weights.
    again = workdir / "fitted2.onnx"
    assert (
        main(
            [
                "fit",
                str(workdir / "normal.csv"),
                "--out",
                str(again),
                "--hidden",
                "8",
                "--epochs",
                "3",
                "--window",
                "32",
                "--seed",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    w1 = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    w2 = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(again)).graph.initializer}
    assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)


def test_fit_too_short_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = workdir / "short.csv"
    short.write_text("temperature,vibration,current\n" + "20,0.3,9\n" * 50)
    assert "fit needs at least" in _err(capsys, ["fit", str(short), "--out", str(workdir / "s.onnx")])


def test_fit_fits_short_series(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """170 rows of normal data (a few minutes of one sensor series) fit, calibrate and export."""
    rng = np.random.default_rng(0)
    t = np.arange(170)
    rows = [f"{20 + np.sin(i / 9) + rng.normal(0, 0.05):.4f},{0.3 + rng.normal(0, 0.01):.4f}" for i in t]
    short = workdir / "short170.csv"
    short.write_text("temperature,vibration\n" + "\n".join(rows) + "\n")
    out = workdir / "s170.onnx"
    assert main(["fit", str(short), "--out", str(out), "--epochs", "3", "--quiet"]) == 0
    meta = load_model(out).meta
    assert meta.calibration is not None and meta.calibration.samples is not None
    assert meta.calibration.samples >= 30  # the held-out tail, all of it scored (the state is warm)
    assert meta.provenance["fit"]["window"] < 64  # the window was fitted to the data


def test_fit_help_lists_only_what_fit_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--calibrate" not in capsys.readouterr().out


def test_quant_tolerance_option(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(capsys, _torch_args(workdir, **{"--quantize": "int8", "--quant-tolerance": "1e-12"}))
    assert "bound 1e-12" in err and "--quant-tolerance" in err


def test_keep_int8_if_slower_option(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Kept whatever this machine measures; refused without --quantize; accepted by every subcommand."""
    from edge_lstm_export.cli import _export_kwargs, _parser

    out = workdir / "kept.onnx"
    argv = [*_torch_args(workdir, **{"--out": str(out), "--quantize": "int8"}), "--keep-int8-if-slower"]
    assert main(argv) == 0
    assert "DynamicQuantizeLSTM" in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "int8: kept" in capsys.readouterr().out
    err = _err(capsys, [*_torch_args(workdir), "--keep-int8-if-slower"])
    assert "--keep-int8-if-slower only applies with --quantize int8" in err
    for argv in (["keras", "m.keras", "--features", "a"], ["fit", "d.csv"]):
        args = _parser().parse_args([*argv, "--out", "o.onnx", "--quantize", "int8", "--keep-int8-if-slower"])
        assert _export_kwargs(args)["keep_int8_if_slower"] is True


def test_fit_cli_defaults_are_fit_configs() -> None:
    """`edge-lstm-export fit` without options trains exactly as `FitConfig()` (one set of defaults)."""
    from edge_lstm_export.cli import _parser
    from edge_lstm_export.fit import FitConfig

    args = _parser().parse_args(["fit", "normal.csv", "--out", "m.onnx"])
    c = FitConfig()
    got = (args.hidden, args.layers, args.epochs, args.patience, args.window, args.seed, args.horizon, args.threads)
    assert got == (c.hidden, c.layers, c.epochs, c.patience, c.window, c.seed, c.horizon, c.threads)


def test_fit_trains_with_its_threads_and_restores_torchs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_lstm_export import fit as fit_module

    seen: list[int] = []
    real = torch.set_num_threads

    def counting(n: int) -> None:
        seen.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", counting)
    before = torch.get_num_threads()
    x = normal_series(300, 0)
    cfg = fit_module.FitConfig(epochs=1, hidden=4, threads=1)
    fit_module.fit_arrays([x], tmp_path / "m.onnx", features=list(FEATURES), config=cfg, progress=None)
    assert seen == [1, before] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fit_module.fit_arrays([x], tmp_path / "m.onnx", features=list(FEATURES), config=fit_module.FitConfig(threads=0))
    from edge_lstm_export.cli import _parser

    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["fit", "x.csv", "--out", "m.onnx", "--threads", "0"])
    assert e.value.code == 2
