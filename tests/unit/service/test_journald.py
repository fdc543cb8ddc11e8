"""Lines to the journal carry their priority (`<4>{...}`), so `journalctl -p warning` finds warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from edge_lstm.service.logs import configure, get_logger, is_journal


@pytest.fixture(autouse=True)
def reset_structlog() -> object:
    yield
    structlog.reset_defaults()


def journal_stream(f: object) -> str:
    st = os.fstat(f.fileno())  # type: ignore[attr-defined]
    return f"{st.st_dev}:{st.st_ino}"


def test_is_journal_matches_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        assert is_journal(a, {"JOURNAL_STREAM": journal_stream(a)})
        # Inherited by a process whose stderr goes elsewhere: not the journal.
        assert not is_journal(b, {"JOURNAL_STREAM": journal_stream(a)})
        for bad in ("", "garbage", "1:", ":2", "1:2:3"):
            assert not is_journal(a, {"JOURNAL_STREAM": bad})
        assert not is_journal(a, {})


def test_priority_prefix_per_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal"
    with open(path, "w") as out:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream(out))
        configure("debug", "auto", stream=out)  # not a tty: JSON
        log = get_logger("t")
        log.debug("d")
        log.info("i")
        log.warning("w", n=1)
        log.error("e")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("x")
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    docs = [json.loads(line[3:]) for line in lines]  # what journald keeps once it strips the prefix
    assert [d["event"] for d in docs] == ["d", "i", "w", "e", "x"]
    assert docs[2]["level"] == "warning" and docs[2]["n"] == 1
    assert "second line" in docs[4]["exception"]  # one line per event: the traceback stays in the JSON


def test_no_prefix_off_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    path = tmp_path / "log"
    with open(path, "w") as out:
        configure("info", "json", stream=out)
        get_logger("t").warning("w")
    assert path.read_text().startswith('{"event": "w"')


def test_daemon_process_prefixes_when_its_stderr_is_the_journal(tmp_path: Path) -> None:
    """The real daemon: stderr is a file whose device:inode is in JOURNAL_STREAM, as systemd sets it."""
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_")}
        env.pop("NOTIFY_SOCKET", None)
        env.update(
            JOURNAL_STREAM=journal_stream(err),
            EDGE_LSTM_MQTT__PORT="1",  # nothing listens: connection warnings, then SIGTERM
            EDGE_LSTM_MQTT__RECONNECT_MIN_DELAY_S="0.2",
            EDGE_LSTM_MQTT__RECONNECT_MAX_DELAY_S="0.2",
            EDGE_LSTM_CHECKPOINT__ENABLED="false",
            EDGE_LSTM_ENGINE__EVICTED="drop",
        )
        p = subprocess.Popen([sys.executable, "-m", "edge_lstm", "run"], env=env, stderr=err, cwd=tmp_path)
        try:
            import time

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "<4>" not in err_path.read_text():
                time.sleep(0.05)
        finally:
            p.terminate()
            assert p.wait(timeout=30) == 0
    lines = err_path.read_text().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    starting = next(json.loads(line[3:]) for line in lines if '"starting"' in line)
    assert starting["level"] == "info"
    assert any(line.startswith("<4>") and json.loads(line[3:])["level"] == "warning" for line in lines)
