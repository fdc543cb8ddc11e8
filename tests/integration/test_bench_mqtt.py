"""bench/bench_mqtt.py --quick runs end to end and prints the table and ratios (smoke test: no timings asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("mosquitto_binary")  # the scripts start their own broker


def bench_mqtt(*args: str) -> str:
    """bench/bench_mqtt.py's stdout (its exit code must be 0)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_mqtt.py"), *args],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


@pytest.mark.slow  # ~40 s here: `./dev quick` skips it
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_mqtt_quick() -> None:
    out = bench_mqtt("--quick", "--latency-rate", "150")
    # The relay row carries its steady share and latency too (the harness's own floor).
    relay_row = r"^relay\s+600\s+[\d,]+\s+\d+\s+[\d.]+\s+[\d.]+/[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d,]+\s"
    assert re.search(relay_row, out, re.M), out
    assert re.search(
        # results, readings/s, CPU µs, steady CPU %, steady p50/p99, p50, p99, @ rate, idle CPU %, READY s
        r"^daemon\s+600\s+[\d,]+\s+\d+\s+[\d.]+\s+[\d.]+/[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d,]+\s+[\d.]+\s+[\d.]+$",
        out,
        re.M,
    ), out
    assert re.search(r"ratio daemon / relay: readings/s [\d.]+x, CPU per reading [\d.]+x", out), out
    # --latency-rate: the latency phase ran at that rate for the daemon and the relay alike
    assert re.search(r"^daemon\s+600\s.*\s150\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^relay\s+600\s.*\s150\s+-\s+-$", out, re.M), out
    # the CPU share of each process during the latency phase, and of the rest of the machine
    for name in ("relay", "daemon"):
        row = rf"^{name}\s+consumer +[\d.]+  broker +[\d.]+  publisher +[\d.]+  collector +[\d.]+  other +[\d.]+$"
        assert re.search(row, out, re.M), out


@pytest.mark.slow  # ~25 s here: `./dev quick` skips it
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_mqtt_steady_only_runs_each_consumer_in_turn() -> None:
    out = bench_mqtt("--quick", "--steady-only", "--repeat", "2")
    for name in ("relay", "daemon"):  # two runs each, their mean and the ratio to the relay's
        row = rf"^{name}\s+steady CPU % +[\d.]+ \(runs: [\d.]+, [\d.]+; [\d.]+x the relay\)  p50/p99 ms: "
        assert re.search(row, out, re.M), out
    assert "backlog drain" not in out and "ratio daemon / relay" not in out  # no other phase ran


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_mqtt_paho_load_still_runs() -> None:
    """--paho-load: the rounds 1-3 publisher and collector (paho), kept for comparisons."""
    out = bench_mqtt("--quick", "--steady-only", "--paho-load")
    assert re.search(r"^daemon\s+steady CPU % +[\d.]+ \(runs: [\d.]+; ", out, re.M), out


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_latency_probe_runs_the_latency_phase_for_each_consumer() -> None:
    # 1,000 readings/s: at 100/s a fast machine's worker used under 1 % of a core in the second (one
    # 10 ms tick or none), below the threshold at which the probe prints a thread.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "latency_probe.py"), "--rate", "1000", "--secs", "1", "--runs", "1"]
        + ["--variant", "w5=engine.max_wait_ms=5"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for name in ("daemon", "w5"):
        row = rf"^{name}\s+rate 1,000/s  p50 [\d.]+ ms  p99 [\d.]+ ms  CPU % "
        row += r"publisher \d+  collector \d+  broker \d+  daemon \d+$"
        assert re.search(row, proc.stdout, re.M), proc.stdout
    assert proc.stdout.count("daemon threads (tid - pid): 0: CPU") == 2, proc.stdout
