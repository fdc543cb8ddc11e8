"""Checkpoint and journal: atomic, self-checking, and together crash-exact (pure, no broker)."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from support.models import make_step_model
from support.outcomes import all_scored, present
from support.traffic import traffic

from edge_lstm import Engine, Reading, Result, load_model
from edge_lstm.durable import checkpoint
from edge_lstm.durable.journal import Journal, replay_batches
from edge_lstm.onnx_model import OnnxStepModel


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", layers=2))


def same_tables(a: Engine, b: Engine) -> float:
    assert list(a.table.slots) == list(b.table.slots)  # same streams, same LRU order
    worst = 0.0
    for s in a.table.slots:
        ra, rb = a.table.row(s), b.table.row(s)
        assert (ra.last_ts, ra.steps, ra.anomalies) == (rb.last_ts, rb.steps, rb.anomalies)
        assert ra.columns.keys() == rb.columns.keys()
        cols = sorted(ra.columns)
        xs = [*ra.states, ra.prediction, *(ra.columns[k] for k in cols)]
        ys = [*rb.states, rb.prediction, *(rb.columns[k] for k in cols)]
        for x, y in zip(xs, ys):
            diff = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
            worst = max(worst, float(np.max(diff, initial=0.0)))
    return worst


def test_checkpoint_carries_the_scoring_statistics(model: OnnxStepModel, tmp_path: Path) -> None:
    from edge_lstm.scoring import ScoringConfig

    scoring = ScoringConfig(baseline=5)
    engine = Engine(model, scoring=scoring)
    engine.process(traffic(5, 30))
    row = engine.table.row("s0")
    assert row.columns["deviation.P"].shape == (3, 3) and not np.allclose(row.columns["deviation.P"], np.eye(3))
    path = tmp_path / "checkpoint"
    checkpoint.save(path, engine.table, model_sha256=model.sha256, journal_segment=0)
    ck = checkpoint.load(path, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None
    restored = Engine(model, scoring=scoring)
    for r in ck.rows:
        restored.table.restore(r)
    assert same_tables(engine, restored) == 0.0
    more = traffic(5, 40)[150:]  # the next steps: both continue identically
    a = [o.deviation for o in all_scored(engine.process(more))]
    b = [o.deviation for o in all_scored(restored.process(more))]
    assert a == b and all(d is not None for d in a)


def test_checkpoint_round_trip(model: OnnxStepModel, tmp_path: Path) -> None:
    engine = Engine(model)
    engine.process(traffic(5, 4))
    path = tmp_path / "checkpoint"
    size = checkpoint.save(path, engine.table, model_sha256=model.sha256, journal_segment=3)
    assert size == path.stat().st_size and not path.with_name("checkpoint.tmp").exists()
    ck = checkpoint.load(path, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None and ck.journal_segment == 3
    restored = Engine(model)
    for row in ck.rows:
        restored.table.restore(row)
    assert same_tables(engine, restored) == 0.0


def test_missing_checkpoint_is_none(model: OnnxStepModel, tmp_path: Path) -> None:
    assert checkpoint.load(tmp_path / "nope", model_sha256=model.sha256, state_shapes=model.state_shapes) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_checkpoint_is_refused_as_corrupt(model: OnnxStepModel, tmp_path: Path, damage: str) -> None:
    engine = Engine(model)
    engine.process(traffic(3, 2))
    path = tmp_path / "checkpoint"
    checkpoint.save(path, engine.table, model_sha256=model.sha256, journal_segment=0)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"\x00" * 100)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointRefused) as e:
        checkpoint.load(path, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert e.value.reason == "corrupt"
    aside = checkpoint.set_aside(path, e.value.reason)
    assert aside.exists() and not path.exists() and ".corrupt." in aside.name


def test_checkpoint_of_another_model_is_refused(model: OnnxStepModel, tmp_path: Path) -> None:
    engine = Engine(model)
    engine.process(traffic(2, 2))
    path = tmp_path / "checkpoint"
    checkpoint.save(path, engine.table, model_sha256="0" * 64, journal_segment=0)
    with pytest.raises(checkpoint.CheckpointRefused) as e:
        checkpoint.load(path, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert e.value.reason == "model_mismatch"


def test_journal_round_trip_and_torn_tail(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open(0)
    readings = traffic(3, 3)
    j.append((i // 2, r) for i, r in enumerate(readings[:5]))
    j.rotate()
    j.append((7, r) for r in readings[5:])
    j.close()
    assert [r for _, r in j.replay(0)] == readings
    assert list(j.replay(1)) == [(7, r) for r in readings[5:]]
    assert [len(g) for g in replay_batches(j.replay(0))] == [2, 2, 1, 4]
    # A crash mid-record leaves a torn tail: replay stops before it and cuts it off.
    last = j.path(1)
    good = last.stat().st_size
    with open(last, "ab") as f:
        f.write(b"\x10\x00\x00\x00\x01\x02")
    assert [r for _, r in j.replay(1)] == readings[5:]
    assert last.stat().st_size == good
    j.drop_before(1)
    assert [n for n, _ in j.segments()] == [1]


def test_interval_fsync_runs_off_the_worker_and_its_failure_surfaces(tmp_path: Path) -> None:
    """A slow disk (an SD card's fsync) must not stall appends; a failed fsync stops the next append."""
    from support.disk import FaultyDisk

    started, release = threading.Event(), threading.Event()
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        started.set()
        assert release.wait(10)
        os.fsync(fd)
        synced.append(fd)

    disk = FaultyDisk()
    disk.fsync_hook = slow_fsync
    j = Journal(tmp_path, fsync_interval_s=0.0, disk=disk)
    j.open(0)
    readings = traffic(2, 4)
    j.append((0, r) for r in readings[:4])  # due: asks the helper thread to fsync
    assert started.wait(5)
    assert threading.current_thread() is threading.main_thread()
    j.append((1, r) for r in readings[4:])  # the fsync is still blocked: appending goes on
    assert j.records == 8 and not synced
    release.set()
    j.close()  # joins the helper; closing fsyncs in this thread
    assert synced and [r for _, r in j.replay(0)] == readings

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    disk.fsync_hook = failing_fsync
    j = Journal(tmp_path, fsync_interval_s=0.0, disk=disk)
    j.open(1)
    j.append((0, r) for r in readings[:1])
    deadline = time.monotonic() + 5
    while j._sync_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="Input/output error"):
        j.append((1, r) for r in readings[1:2])
    disk.fsync_hook = None
    j.close()


def test_checkpoint_plus_journal_replay_is_crash_exact(model: OnnxStepModel, tmp_path: Path) -> None:
    readings = traffic(6, 40, seed=5)
    reference = Engine(model)
    for i in range(0, len(readings), 17):
        reference.process(readings[i : i + 17])

    # The "crashed" run: checkpoint part-way, keep journaling, then die (nothing closed).
    run = Engine(model)
    j = Journal(tmp_path)
    j.open(0)
    for i in range(0, 150, 17):
        batch = readings[i : min(i + 17, 150)]
        out = run.process(batch)
        j.append((i, r) for r, o in zip(batch, out) if isinstance(o, Result))
        if i == 68:
            seg = j.rotate()
            checkpoint.save(tmp_path / "checkpoint", run.table, model_sha256=model.sha256, journal_segment=seg)
            j.drop_before(seg)

    # Restart: checkpoint + journal replay, then the broker redelivers everything from 120 on
    # (unacknowledged); what was already journaled comes back as duplicates.
    ck = checkpoint.load(tmp_path / "checkpoint", model_sha256=model.sha256, state_shapes=model.state_shapes)
    restarted = Engine(model)
    for row in present(ck).rows:
        restarted.table.restore(row)
    for group in replay_batches(Journal(tmp_path).replay(present(ck).journal_segment)):
        restarted.process(group)
    redelivered = readings[120:]
    out = []
    for i in range(0, len(redelivered), 17):
        out += restarted.process(redelivered[i : i + 17])
    assert sum(1 for o in out if not isinstance(o, Result)) == 30  # 120..149 were already applied
    assert same_tables(reference, restarted) <= 1e-6
    assert same_tables(reference, restarted) == 0.0  # same engine calls replayed: bit-exact


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def _record(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))

    info = warning = debug = _record


def test_durable_state_restores_checkpoint_plus_journal(model: OnnxStepModel, tmp_path: Path) -> None:
    from edge_lstm.durable.store import DurableState, StateDirBusy

    readings = traffic(4, 10)
    first = Engine(model)
    d = DurableState(tmp_path, first, model.sha256, _Log())
    d.restore()
    for i in range(0, len(readings), 7):
        batch = readings[i : i + 7]
        out = first.process(batch)
        d.record((i, r) for r, o in zip(batch, out) if isinstance(o, Result))
        if i == 14:
            d.checkpoint()
    with pytest.raises(StateDirBusy):
        DurableState(tmp_path, Engine(model), model.sha256, _Log())
    d.journal.close()  # a crash: no final checkpoint
    import os

    os.close(d._lock)
    second = Engine(model)
    log = _Log()
    info = DurableState(tmp_path, second, model.sha256, log).restore()
    assert info["checkpoint"] and info["replayed"] == len(readings) - 21
    assert same_tables(first, second) == 0.0


def test_refused_checkpoint_sets_its_journal_aside_too(model: OnnxStepModel, tmp_path: Path) -> None:
    from edge_lstm.durable.store import DurableState

    first = Engine(model)
    d = DurableState(tmp_path, first, model.sha256, _Log())
    d.restore()
    readings = traffic(2, 3)
    first.process(readings)
    d.record((0, r) for r in readings)
    d.journal.close()
    import os

    os.close(d._lock)
    from edge_lstm.durable.store import generations

    for _, path in generations(tmp_path):  # every generation damaged: nothing to fall back to
        path.write_bytes(b"garbage")
    log = _Log()
    fresh = Engine(model)
    info = DurableState(tmp_path, fresh, model.sha256, log).restore()
    assert not info["checkpoint"] and info["replayed"] == 0 and len(fresh.table) == 0
    assert [e for e, _ in log.events][:1] == ["checkpoint_set_aside"]
    assert list(tmp_path.glob("journal.*.corrupt.*")) and list(tmp_path.glob("checkpoint.*.corrupt.*"))


def test_journal_records_are_exact_and_old_json_records_still_replay(tmp_path: Path) -> None:
    """Binary records round-trip bit for bit; segments written by earlier versions (JSON) replay."""
    import json

    odd = Reading("pump/ünï 7", 1_764_000_000.123456789, (0.1, -0.0, 1e-310, 3.141592653589793, 1e300))
    j = Journal(tmp_path)
    j.open(0)
    j.append([(2**40, odd)])
    j.close()
    ((batch, back),) = list(j.replay(0))
    assert batch == 2**40 and back == odd
    assert [struct.pack("<d", v) for v in back.values] == [struct.pack("<d", v) for v in odd.values]
    # A segment as the previous version wrote it, followed by a new record: both replay.
    payload = json.dumps([3, "old", 1.5, [1.0, 2.0]], separators=(",", ":")).encode()
    j.path(1).write_bytes(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    j.open(1)
    j.append([(4, odd)])
    j.close()
    assert list(j.replay(1)) == [(3, Reading("old", 1.5, (1.0, 2.0))), (4, odd)]


def test_journal_record_bytes_follow_the_documented_layout(tmp_path: Path) -> None:
    """`0x02 <u64 batch><f64 ts><u16 n><n x f64 values><UTF-8 stream>` little-endian, behind
    `<u32 length><u32 crc32>` (journal.py): journals written by earlier versions must still replay."""
    payload = (
        b"\x02"
        + (7).to_bytes(8, "little")
        + struct.pack("<d", 1.5)
        + (2).to_bytes(2, "little")
        + struct.pack("<2d", 2.0, -1.0)
        + "pümp".encode()
    )
    j = Journal(tmp_path)
    j.open(0)
    j.append([(7, Reading("pümp", 1.5, (2.0, -1.0))), (7, Reading("pümp", 1.5, (2.0, -1.0)))])
    j.close()
    record = struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    assert (tmp_path / "journal.0").read_bytes() == record * 2
