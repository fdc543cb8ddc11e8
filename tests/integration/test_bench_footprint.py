"""bench/footprint.py --quick runs end to end, every phase, and prints its table (smoke test: no timings
asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("mosquitto_binary")  # the script starts its own broker

NUM = r"[\d.,]+"


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_footprint_quick_reports_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "footprint.py"), "--quick", "--variant", "w5=engine.max_wait_ms=5"],
        capture_output=True,
        text=True,
        timeout=230,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    for name in ("daemon", "w5"):
        # light p50/p99/max, CPU, missing; the same at 1k; idle, READY; warm, full, checkpoint s, peak, after,
        # bytes per stream; drain and its ratio to the relay
        lat = rf"{NUM}/{NUM}/{NUM}"
        row = rf"^{name}\s+{lat}\s+{NUM}\s+0\s+{lat}\s+{NUM}\s+0\s+{NUM}\s+{NUM}" + rf"(\s+-?{NUM}){{8}}$"
        assert re.search(row, out, re.M), out
    assert re.search(rf"^relay drain readings/s: {NUM}$", out, re.M), out
    assert re.search(r"^ratio w5 / daemon: light p99 [\d.]+x, 1k p99 [\d.]+x, 1k CPU [\d.]+x", out, re.M), out
