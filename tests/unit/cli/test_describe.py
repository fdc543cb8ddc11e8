"""`edge-lstm inspect`: the contract of a model, as text and as JSON; bad models exit 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.models import make_step_model

from edge_lstm.cli import main as cli
from edge_lstm.onnx_model import default_model_path, file_sha256

FEATURES = ("temperature", "vibration", "current")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_step_model(
        tmp_path_factory.mktemp("m") / "fc.onnx",
        features=FEATURES,
        hidden=8,
        layers=2,
        warmup_steps=7,
        name="inspect-me",
    )


def test_text_shows_the_contract(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    for needle in (
        "inspect-me 0.0.1",
        "kind=forecast",
        "state.lstm.h.in -> state.lstm.h.out",
        "[batch, 2, 8]",
        "threshold 3",
        "quantile 0.999",
        "warm-up      7 steps",
        "1 s between readings",
        file_sha256(model_path),
        "parity: not recorded",
        "x  float32 [batch, 3]",
    ):
        assert needle in out, needle
    for f in FEATURES:
        assert f in out


def test_json_is_one_document(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["inspect", str(model_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == {"name": "inspect-me", "version": "0.0.1"}
    assert doc["file"]["sha256"] == file_sha256(model_path)
    assert [f["name"] for f in doc["features"]] == list(FEATURES)
    assert doc["features"][0] == {"name": "temperature", "offset": 0.0, "scale": 1.0}
    assert doc["input"] == {"name": "x", "dtype": "float32", "shape": ["batch", 3]}
    assert doc["output"]["kind"] == "forecast" and doc["output"]["names"] == list(FEATURES)
    assert doc["output"]["horizon"] == 1
    assert [s["per_stream_shape"] for s in doc["state"]] == [[2, 8], [2, 8]]
    assert doc["state_bytes_per_stream"] == 2 * 2 * 8 * 4
    assert doc["calibration"]["threshold"] == 3.0
    assert doc["warmup_steps"] == 7 and doc["sample_interval_s"] == 1.0
    assert doc["provenance"]["tool"] == "tests/support/models.py"


def test_score_model_without_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_step_model(tmp_path / "s.onnx", kind="score", calibration=False)
    assert cli(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "kind=score" in out and "calibration  none" in out


@pytest.mark.parametrize("content", [b"not an onnx file", b""])
def test_bad_model_exits_2_with_one_line(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    assert cli(["inspect", str(p)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-lstm inspect: ") and "bad.onnx" in lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["inspect", str(tmp_path / "nope.onnx")]) == 2
    assert "not found" in capsys.readouterr().err


def test_model_without_metadata_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    p = make_step_model(tmp_path / "m.onnx")
    m = onnx.load(str(p))
    del m.metadata_props[:]
    onnx.save(m, str(p))
    assert cli(["inspect", str(p)]) == 2
    assert "edge_lstm" in capsys.readouterr().err


def test_packaged_default_via_subprocess() -> None:
    """Without MODEL: the packaged model (exit 0), or, while it is not built, a clear exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "inspect", "--json"], capture_output=True, text=True, timeout=60
    )
    if default_model_path().is_file():
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["file"]["sha256"] == file_sha256(default_model_path())
        assert doc["calibration"] is not None, "the packaged model must be calibrated"
    else:
        assert proc.returncode == 2
        assert "packaged default model" in proc.stderr and proc.stdout == ""


def test_inspect_into_a_closed_pipe_is_not_an_error() -> None:
    import subprocess
    import sys

    # `edge-lstm inspect --json | head -0`: the reader is gone before the first write (closed right
    # after start; importing takes far longer), so the write meets a broken pipe.
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_lstm", "inspect", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
