"""systemd integration: the unit file, and the sd_notify protocol spoken by the real daemon."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.outcomes import present

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.notify import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-lstm.service"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_key_settings() -> None:
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == "/opt/edge-lstm/venv/bin/edge-lstm run --config /etc/edge-lstm/config.toml"
    assert svc["StateDirectory"] == "edge-lstm" and svc["ConfigurationDirectory"] == "edge-lstm"
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"] == "2"
    assert int(svc["WatchdogSec"]) >= 10
    for key, value in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
    ]:
        assert svc[key] == value, key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "MemoryMax" in svc
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize(
    "source,name", [("edge-lstm.service", "edge-lstm.service"), ("edge-lstm@.service", "edge-lstm@line1.service")]
)
def test_units_verify_and_are_hardened(tmp_path: Path, source: str, name: str) -> None:
    """`systemd-analyze verify` on a copy whose ExecStart is the test venv's entry point; and the
    shipped hardening keeps `systemd-analyze security` exposure at or under 2.0."""
    exe = ROOT / ".venv" / "bin" / "edge-lstm"
    if not exe.exists():
        pytest.skip("no venv entry point to stand in for /opt/edge-lstm/venv/bin/edge-lstm")
    unit = tmp_path / name
    unit.write_text((UNIT.parent / source).read_text().replace("/opt/edge-lstm/venv/bin/edge-lstm", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert name not in r.stderr, r.stderr  # no warnings about our unit
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert exposure is not None, r.stdout[-2000:] + r.stderr
    assert float(exposure.group(1)) <= 2.0, r.stdout[-3000:]


def test_notifier_abstract_namespace_and_noop() -> None:
    name = f"edge-lstm-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"})
        assert n.ready("hello")
        assert s.recv(1024) == b"READY=1\nSTATUS=hello"
        assert n.watchdog(now=100.0) and not n.watchdog(now=100.5) and n.watchdog(now=101.1)
        assert s.recv(1024) == b"WATCHDOG=1"
        n.close()
    off = Notifier({})
    assert not off.enabled and not off.ready() and not off.watchdog()
    # WATCHDOG_PID for another process: no pings from us.
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None


@pytest.mark.integration
def test_daemon_speaks_sd_notify(
    broker: PrivateBroker, step_model_path: Path, tmp_path: Path, run_daemon: Callable[..., DaemonProcess]
) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(sock_path))
        s.settimeout(0.2)
        d = run_daemon(
            daemon_config(broker, step_model_path, tmp_path / "state"),
            env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "300000"},
        )
        got: list[str] = []

        def collect_until(pred: Callable[[], bool], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not pred():
                try:
                    got.extend(s.recv(4096).decode().split("\n"))
                except TimeoutError:
                    pass

        collect_until(lambda: "READY=1" in got and got.count("WATCHDOG=1") >= 3, 15)
        assert "READY=1" in got, got
        assert got.count("WATCHDOG=1") >= 3, got  # every ~0.1 s with WATCHDOG_USEC=0.3 s
        assert any(x.startswith("STATUS=") for x in got)
        present(d.proc).send_signal(15)
        collect_until(lambda: "STOPPING=1" in got, 15)
        assert present(d.proc).wait(timeout=15) == 0
        assert "STOPPING=1" in got
