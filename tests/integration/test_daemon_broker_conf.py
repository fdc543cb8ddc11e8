"""docs/mosquitto.conf is the configuration the guarantees are tested with: readings sent while the
daemon is down survive a broker restart (persistence) and are all scored afterwards."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import BrokerUnavailable, find_mosquitto, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


class ConfBroker:
    """mosquitto started from docs/mosquitto.conf with only the port and persistence directory changed."""

    def __init__(self, workdir: Path) -> None:
        try:
            self.binary = find_mosquitto()
        except BrokerUnavailable as e:
            pytest.skip(str(e))
        self.port = free_port()
        self.dir = workdir
        text = (ROOT / "docs" / "mosquitto.conf").read_text()
        text = re.sub(r"(?m)^listener \d+ ", f"listener {self.port} ", text)
        text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {workdir}/", text)
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to the `mosquitto` user, which cannot write into pytest's
            # private temp dirs. (A packaged broker runs as `mosquitto` with /var/lib/mosquitto.)
            text += "\nuser root\n"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start with docs/mosquitto.conf")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def test_docs_conf_keeps_readings_across_broker_restart(
    tmp_path: Path,
    step_model_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    (tmp_path / "mosq").mkdir()
    b = ConfBroker(tmp_path / "mosq")
    conf = b.conf.read_text()
    for needle in ("persistence true", "max_queued_messages"):
        assert needle in conf
    b.start()
    try:
        cfg = daemon_config(b, step_model_path, tmp_path / "state")
        d = run_daemon(cfg)
        d.wait_ready()
        assert d.terminate() == 0  # the session and its subscription stay on the broker

        pub = publisher(b.port)
        n = 300
        for i in range(n):
            pub.send(f"sensors/s{i % 10}", reading_payload(T0 + i // 10, [i % 7, 1, 2]))
        pub.flush()
        pub.client.disconnect()
        pub.client.loop_stop()

        b.stop()  # clean stop writes the persistence database
        assert list((tmp_path / "mosq").glob("mosquitto.db")), "persistence file not written"
        b.start()

        col = collector(b.port, ["edge-lstm/scores/#"])
        d2 = run_daemon(cfg)
        d2.wait_ready()
        results = col.wait_count("edge-lstm/scores/", n, timeout=30)
        assert len({(r["stream"], r["ts"]) for r in results}) == n
        assert d2.terminate() == 0
    finally:
        b.stop()
