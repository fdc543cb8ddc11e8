"""bench/bench_engine.py runs end to end at a tiny size and prints the ratio (a smoke test: no timings asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support.models import make_step_model

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_engine.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bench_prints_ratio_and_stages(tmp_path: Path) -> None:
    model = make_step_model(tmp_path / "m.onnx", features=("temperature", "vibration", "current"))
    out = run_bench("--streams", "40", "--steps", "2", "--batch", "16", "--model", str(model))
    assert re.search(r"ratio \(full pipeline, batched / per-message readings/s\): [\d.]+x", out), out
    assert re.search(r"^batched\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+6$", out, re.M), out  # 3 calls/step
    assert re.search(r"^per-message\s+[\d,]+\s+.*\s80$", out, re.M), out  # one call per reading
    assert "engine stage alone" in out


def test_bench_default_model_or_fallback() -> None:
    out = run_bench("--streams", "8", "--steps", "1")
    assert "ratio" in out
