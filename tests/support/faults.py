"""Building blocks of the fault tests (tests/integration/test_faults.py) that are not MQTT clients or the
daemon (support.mqtt: SessionClient, OrderedPublisher, retained; support.daemon: DaemonProcess): a
persistent mosquitto that survives restarts, the uninterrupted reference run, and the state a restart
would load, to compare against it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_lstm import Engine, Reading, Result
from edge_lstm.demo.broker import PrivateBroker
from edge_lstm.durable import checkpoint
from edge_lstm.durable.journal import Journal
from edge_lstm.durable.store import load_into, newest_checkpoint

# ---- broker ------------------------------------------------------------------------------------


def persistent_broker() -> PrivateBroker:
    """A started PrivateBroker with `persistence true` whose database really is written.

    Started as root, mosquitto drops privileges to the `mosquitto` user, which cannot write into a
    private (0700, root-owned) temp dir: persistence then silently does nothing and every restart
    forgets all sessions and queued messages. The work dir is made world-writable instead of adding
    `user root` (which mosquitto refuses if the config already has a `user` line).
    """
    workdir = Path(tempfile.mkdtemp(prefix="edge-lstm-faults-mosq-"))
    os.chmod(workdir, 0o777)
    b = PrivateBroker(persistence=True, workdir=workdir)
    b.start()
    return b


def discard_broker(b: PrivateBroker) -> None:
    b.stop()
    shutil.rmtree(b.dir, ignore_errors=True)


def broker_db_written(b: PrivateBroker) -> bool:
    return bool((b.dir / "mosquitto.db").exists())


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- reference and final state ----------------------------------------------------------------


def reference_run(model: Any, readings: list[Reading], batch: int) -> tuple[Engine, dict[tuple[str, float], Result]]:
    """The uninterrupted run: an in-process engine over the same readings in order."""
    engine = Engine(model)
    results: dict[tuple[str, float], Result] = {}
    for i in range(0, len(readings), batch):
        for out in engine.process(readings[i : i + batch]):
            assert isinstance(out, Result), out
            results[(out.stream, out.ts)] = out
    return engine, results


def restored_engine(model: Any, state_dir: Path) -> tuple[Engine, checkpoint.Checkpoint, int]:
    """What a restart would load from `state_dir`, loaded by the production code (durable.store.load_into),
    read-only. Returns (engine, checkpoint, journal records replayed)."""
    newest = newest_checkpoint(state_dir)
    assert newest is not None, f"no checkpoint in {state_dir}"
    ck = checkpoint.load(newest, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None, f"no checkpoint in {state_dir}"
    engine = Engine(model)
    loaded = load_into(engine, ck, Journal(state_dir))
    return engine, ck, loaded.replayed


def state_difference(a: Engine, b: Engine, stream: str) -> float:
    """The largest difference between two engines' rows of a stream: recurrent state, pending prediction,
    and every scoring and alarm column (per-stream statistics must be crash-exact too)."""
    ra, rb = a.table.row(stream), b.table.row(stream)
    assert ra.columns.keys() == rb.columns.keys()
    xs = [*ra.states, ra.prediction, *(ra.columns[k] for k in sorted(ra.columns))]
    ys = [*rb.states, rb.prediction, *(rb.columns[k] for k in sorted(rb.columns))]
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
               for x, y in zip(xs, ys))  # fmt: skip


def results_by_key(payloads: list[bytes]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in payloads:
        doc = json.loads(p)
        out[(doc["stream"], float(doc["ts"]))].append(doc)
    return out
