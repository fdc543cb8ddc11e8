"""Checkpoints you can lose one of (issue 20): two generations with checksums, the journal from the
older one kept; one flipped byte in the newest checkpoint costs nothing. Journal records that fail their
checksum are skipped and counted, never the end of replay. The journal's fsync runs on its timer even
when no further record comes. A checkpoint is streamed column by column (issue 22)."""

from __future__ import annotations

import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.disk import FaultyDisk
from support.models import make_step_model
from support.traffic import traffic

from edge_lstm import Engine, Result, load_model
from edge_lstm.durable import checkpoint
from edge_lstm.durable.journal import Journal
from edge_lstm.durable.store import DurableState, generations


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_model(make_step_model(tmp_path_factory.mktemp("m") / "m.onnx", layers=2))


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = debug = error = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for e, kw in self.events if e == event]


def exact(a: Engine, b: Engine) -> None:
    assert list(a.table.slots) == list(b.table.slots)
    for s in a.table.slots:
        ra, rb = a.table.row(s), b.table.row(s)
        assert (ra.last_ts, ra.steps, ra.anomalies) == (rb.last_ts, rb.steps, rb.anomalies)
        for x, y in zip([*ra.states, ra.prediction], [*rb.states, rb.prediction]):
            assert np.array_equal(x, y)
        for k in ra.columns:
            assert np.array_equal(ra.columns[k], rb.columns[k]), k


def spilling(model: Any, state: Path) -> Engine:
    """An engine whose table holds 3 of the 5 streams: the others are spilled and come back."""
    from edge_lstm.durable.spill import SqliteSpill

    state.mkdir(parents=True, exist_ok=True)
    columns = Engine(model).table.column_specs
    spill = SqliteSpill(state / "spill.db", model.state_shapes, len(model.meta.output.names), columns=columns)
    return Engine(model, max_streams=3, spill=spill)


def run_with_checkpoints(model: Any, state: Path, engine: Engine | None = None) -> Engine:
    """Three checkpoints along the way, journal after each, then a crash (nothing closed)."""
    engine = engine if engine is not None else Engine(model)
    d = DurableState(state, engine, model.sha256, Log(), spill=engine.spill)
    d.restore()
    readings = traffic(5, 60, seed=3)
    for i in range(0, len(readings), 11):
        batch = readings[i : i + 11]
        out = engine.process(batch)
        d.record((i, r) for r, o in zip(batch, out) if isinstance(o, Result))
        if i in (66, 132, 198):
            d.checkpoint()
    d.journal.close()
    import os

    os.close(d._lock)
    return engine


def restore(model: Any, state: Path, engine: Engine | None = None) -> tuple[Engine, Log, dict[str, Any]]:
    engine, log = (engine if engine is not None else Engine(model)), Log()
    d = DurableState(state, engine, model.sha256, log, spill=engine.spill)
    info = d.restore()
    d.close(final_checkpoint=False)
    return engine, log, info


def test_two_generations_are_kept_with_the_journal_from_the_older(model: Any, tmp_path: Path) -> None:
    run_with_checkpoints(model, tmp_path)
    gens = generations(tmp_path)
    assert len(gens) == 2
    older = checkpoint.load(gens[0][1], model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert older is not None
    segments = [n for n, _ in Journal(tmp_path).segments()]
    assert segments[0] == older.journal_segment == gens[0][0]  # the journal leads on from the older one


@pytest.mark.parametrize("spill", [False, True])
def test_a_flipped_byte_in_the_newest_checkpoint_falls_back_exactly(model: Any, tmp_path: Path, spill: bool) -> None:
    """With `spill`, streams are evicted and come back between checkpoints: the spill store must keep
    the versions a replay from the previous generation reads."""
    crashed = run_with_checkpoints(model, tmp_path / "state", spilling(model, tmp_path / "state") if spill else None)
    shutil.copytree(tmp_path / "state", tmp_path / "intact")
    (_, previous), (_, newest) = generations(tmp_path / "state")
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))

    damaged, log, info = restore(model, tmp_path / "state", spilling(model, tmp_path / "state") if spill else None)
    intact, intact_log, _ = restore(model, tmp_path / "intact", spilling(model, tmp_path / "intact") if spill else None)
    assert not intact_log.named("checkpoint_set_aside")
    (warning,) = log.named("checkpoint_set_aside")
    assert warning["file"] == str(newest) and "checksum mismatch" in warning["detail"]
    assert warning["fallback"] == str(previous)
    assert info["fallback"] and info["checkpoint"]
    exact(intact, damaged)  # every stream, exactly as from the intact copy
    exact(crashed, damaged)  # and as the run that crashed
    if spill:
        assert crashed.stats.unspilled > 0 and damaged.spill is not None
        for s in ("s0", "s1", "s2", "s3", "s4"):  # the spilled ones too, read back as they were left
            a, b = crashed.spill.get(s, float("inf")), damaged.spill.get(s, float("inf"))  # type: ignore[union-attr]
            assert (a is None) == (b is None)
            assert a is None or b is None or (a.last_ts, a.steps) == (b.last_ts, b.steps)


def test_a_damaged_journal_record_is_skipped_not_the_end_of_replay(tmp_path: Path) -> None:
    readings = traffic(3, 10)
    j = Journal(tmp_path)
    j.open(0)
    for i, r in enumerate(readings):
        j.append([(i, r)])
    j.close()
    path = j.path(0)
    data = bytearray(path.read_bytes())
    (length, _) = struct.unpack_from("<II", data, 0)
    second = 8 + length  # flip a byte inside the second record's payload
    data[second + 8 + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    replayed = [r for _, r in j.replay(0)]
    assert replayed == readings[:1] + readings[2:]  # only the damaged one is missing
    (damage,) = j.damaged
    assert damage.path == path and damage.offset == second and damage.skipped_bytes == 8 + length
    assert path.stat().st_size == len(data)  # good records follow: nothing cut


def test_a_torn_tail_is_still_cut(tmp_path: Path) -> None:
    readings = traffic(2, 3)
    j = Journal(tmp_path)
    j.open(0)
    j.append((0, r) for r in readings)
    j.close()
    good = j.path(0).stat().st_size
    payload = b"\x02" + b"\x00" * 10
    with open(j.path(0), "ab") as f:
        f.write(struct.pack("<II", 40, zlib.crc32(payload)) + payload)  # promised 40 bytes, wrote 11
    assert [r for _, r in j.replay(0)] == readings and not j.damaged
    assert j.path(0).stat().st_size == good


def test_the_journal_is_fsynced_on_its_timer_without_a_further_record(tmp_path: Path) -> None:
    disk = FaultyDisk()
    synced = threading.Event()

    def fsync(fd: int) -> None:
        synced.set()

    j = Journal(tmp_path, fsync_interval_s=0.2, disk=disk)
    j.open(0)
    j.append([(0, traffic(1, 1)[0])])  # just synced at open: not due yet
    disk.fsync_hook = fsync
    time.sleep(0.25)
    assert not synced.is_set()  # nothing synced it yet: no record came
    j.tick()  # the worker's loop
    assert synced.wait(5)
    j.close()


def test_checkpoint_is_streamed_in_chunks_and_round_trips(model: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """Writes are a chunk of rows each (never the whole table at once), and the file loads back."""
    monkeypatch.setattr(checkpoint, "CHUNK_ROWS", 7)
    engine = Engine(model)
    engine.process(traffic(30, 3))
    sizes: list[int] = []
    disk = FaultyDisk()
    real_write = disk.write

    def write(fd: int, data: bytes | memoryview) -> None:
        sizes.append(len(data))
        real_write(fd, data)

    disk.write = write  # type: ignore[method-assign]
    size = checkpoint.save(
        tmp_path / "checkpoint.1", engine.table, model_sha256=model.sha256, journal_segment=1, disk=disk
    )
    assert size == (tmp_path / "checkpoint.1").stat().st_size
    row_bytes = engine.table.nbytes() // engine.table.capacity
    assert max(sizes) < 7 * row_bytes + 4096  # one chunk (or the header), never the table
    ck = checkpoint.load(tmp_path / "checkpoint.1", model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None
    back = Engine(model)
    ck.restore_into(back.table)
    exact(engine, back)


def test_columns_an_older_release_named_otherwise_restore(model: Any, tmp_path: Path) -> None:
    """A checkpoint whose scoring columns carry a release's old names (`dev.*`, now `deviation.*`:
    state.RENAMED_PREFIXES) restores them under the new names, not as fresh columns."""
    from types import SimpleNamespace

    from edge_lstm.state import RENAMED_PREFIXES

    engine = Engine(model)
    engine.process(traffic(4, 30))
    t = engine.table
    old_names = {}
    for k, a in t.columns.items():
        sym = t.packed(k)  # that release stored symmetric matrices whole
        whole = a.take(sym.full, axis=1).reshape(len(a), sym.k, sym.k) if sym is not None else a
        for old, new in RENAMED_PREFIXES.items():
            k = old + k[len(new) :] if k.startswith(new) else k
        old_names[k] = whole
    assert old_names.keys() != t.columns.keys()  # some column was renamed
    older = SimpleNamespace(
        lru=t.lru,
        index=t.index,
        states=t.states,
        last_ts=t.last_ts,
        steps=t.steps,
        anomalies=t.anomalies,
        prediction=t.prediction,
        columns=old_names,
        packed=lambda k: None,
    )
    path = tmp_path / "checkpoint.1"
    checkpoint.save(path, older, model_sha256=model.sha256, journal_segment=1)  # type: ignore[arg-type]
    ck = checkpoint.load(path, model_sha256=model.sha256, state_shapes=model.state_shapes)
    assert ck is not None
    back = Engine(model)
    ck.restore_into(back.table)
    exact(engine, back)
