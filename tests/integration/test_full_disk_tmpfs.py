"""A really full disk (issue 20): the daemon process, a private mosquitto, and a state directory on a
small tmpfs that the test fills up and frees again. Needs permission to mount a tmpfs (root, as in the
CI container); without it the test is skipped, and tests/unit/service/test_full_disk.py covers the same
behaviour through the disk port with an injected ENOSPC.

Streaming case: every reading gets a result while the disk is full, no exit, one warning naming the
directory, `durable: false` on the stats topic, durable again after space is freed (no restart), and
an exact continuation after a restart. Start case: started on the full disk, it serves (degraded) and
never exits 1."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.config import daemon_config
from support.daemon import DaemonProcess
from support.mqtt import Collector, Publisher
from support.outcomes import present
from support.traffic import reading_payload

from edge_lstm.demo.broker import PrivateBroker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): see test_full_disk.py")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Fill the file system to the last block."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def stats(col: Collector) -> dict[str, Any]:
    got = col.snapshot("edge-lstm/stats")
    doc: dict[str, Any] = json.loads(got[-1][1]) if got else {}
    return doc


def test_full_tmpfs_while_streaming_and_at_start(
    tmpfs: Path,
    broker: PrivateBroker,
    step_model_path: Path,
    run_daemon: Callable[..., DaemonProcess],
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
) -> None:
    state = tmpfs / "state"
    cfg = daemon_config(broker, step_model_path, state, checkpoint={"interval_s": 1.0})
    col = collector(broker.port, ["edge-lstm/scores/#", "edge-lstm/stats"])
    d = run_daemon(cfg)
    d.wait_ready()
    pub = publisher(broker.port)
    n = 0

    def send(k: int) -> None:
        nonlocal n
        for _ in range(k):
            for s in ("a", "b"):
                pub.send(f"sensors/{s}", reading_payload(T0 + n, [0.1 * (n % 7), 1.0, 2.0]))
            n += 1
        pub.flush()

    send(10)
    col.wait_count("edge-lstm/scores/", 20)
    filler = fill(tmpfs)
    send(40)
    col.wait_count("edge-lstm/scores/", 100)  # every reading scored while full
    d.wait_event("state_dir_unwritable")
    col.wait_for(lambda c: stats(c).get("durable") is False, what="durable: false on the stats topic")
    assert d.running()
    full = [e for e in d.events() if e.get("event") == "state_dir_unwritable"]
    assert len(full) == 1 and full[0]["dir"] == str(state) and "space" in full[0]["error"]

    filler.unlink()  # space is back: durable again without a restart
    d.wait_event("state_dir_writable", timeout=30)
    send(10)
    col.wait_count("edge-lstm/scores/", 120)
    col.wait_for(lambda c: stats(c).get("durable") is True, what="durable: true again")
    assert d.terminate() == 0

    # Exact continuation after a restart: the checkpoint covers all 60 steps of each stream.
    from edge_lstm.durable import checkpoint
    from edge_lstm.durable.store import newest_checkpoint
    from edge_lstm.onnx_model import load_model

    model = load_model(step_model_path)
    ck = checkpoint.load(present(newest_checkpoint(state)), model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None and {r.stream: r.steps for r in ck.rows} == {"a": 60, "b": 60}

    # Start case: on a full disk it starts, restores and serves (degraded), never exit 1.
    filler = fill(tmpfs)
    d.start()
    d.wait_ready()
    send(5)
    col.wait_count("edge-lstm/scores/", 130)
    d.wait_event("state_dir_unwritable")
    assert d.running()
    assert d.terminate() == 0
    os.unlink(filler)
    time.sleep(0.1)
