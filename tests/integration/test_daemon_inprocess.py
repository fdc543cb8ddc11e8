"""The daemon class used in-process (as the demo does), and its import hygiene."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import start_in_thread
from support.fakes import FakeNotifier
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon


def test_daemon_never_imports_torch() -> None:
    code = (
        "import sys, edge_lstm, edge_lstm.service.daemon, edge_lstm.service.mqtt, "
        "edge_lstm.service.config, edge_lstm.service.notify, "
        "edge_lstm.service.logs; edge_lstm.onnx_model.load_model; "
        "bad = [m for m in ('torch', 'onnx', 'onnxscript') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.integration
def test_daemon_in_a_thread(
    broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)
    settings = load_settings(
        None,
        model=str(step_model_path),
        state_dir=str(tmp_path),
        mqtt={"port": broker.port, "client_id": "inproc", "errors_topic": "edge-lstm/errors"},
    )
    notifier = FakeNotifier()
    d = Daemon(settings, notifier=notifier)
    stop, t = start_in_thread(d)
    col = collector(broker.port, ["edge-lstm/#"])
    pub = publisher(broker.port)
    pub.send("sensors/x", reading_payload(1_700_000_000, [1, 2, 3]))
    pub.send("sensors/x", b"garbage")
    pub.flush()
    col.wait_count("edge-lstm/scores/", 1)
    col.wait_count("edge-lstm/errors", 1)
    st = d.stats()
    assert st["results"] == 1 and st["rejected"] == {"not_json": 1} and st["streams"] == 1
    stop.set()
    t.join(20)
    assert not t.is_alive()
    assert notifier.sent[0].startswith("STATUS=") and "READY=1" in notifier.sent and "STOPPING=1" in notifier.sent
    col.wait_for(lambda c: c.snapshot("edge-lstm/status")[-1][1] == b"offline", what="offline")
