"""bench/bench_callback.py runs end to end at a tiny size and prints both modes (a smoke test: no timings asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("mosquitto_binary")  # the scripts start their own broker


@pytest.mark.integration
def test_bench_callback_prints_both_modes() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_callback.py"),
            "--readings",
            "300",
            "--streams",
            "10",
            "--timeout",
            "30",
            "--idle",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    for mode in ("daemon", "naive"):
        assert re.search(rf"^{mode}\s+300\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d.]+\s+[\d,]+\s", out, re.M), out
    assert re.search(r"ratio \(daemon / naive, end-to-end readings/s\): ([\d.]+|inf)x", out), out
