"""Stream flood: 1,000,000 distinct stream ids through the engine with max_streams=1,000.

The table never holds more than max_streams rows, idle streams are evicted (least recently seen
first) while active ones keep their state, every evicted row comes out through take_evicted, and
memory stays bounded and independent of the number of ids, also when nobody takes the evicted rows.
Run with -s to see the measured numbers. EDGE_LSTM_FLOOD_IDS overrides the number of ids.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from support.models import make_step_model

from edge_lstm.engine import Engine
from edge_lstm.onnx_model import OnnxStepModel, load_model
from edge_lstm.reading import Reading
from edge_lstm.result import Result

N_IDS = int(os.environ.get("EDGE_LSTM_FLOOD_IDS", "1000000"))
MAX_STREAMS = 1_000
BATCH = 1_000
HOT = 10  # streams present in every batch: never idle, so never evicted
T0 = 1_750_000_000.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("model") / "m.onnx", hidden=8))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def batch(b: int, fresh: int) -> list[Reading]:
    """Batch b: the hot streams, then `fresh` streams never seen before."""
    ts = T0 + b
    out = [Reading(f"hot-{h}", ts, (1.0, 2.0, 3.0)) for h in range(HOT)]
    start = b * fresh
    out += [Reading(f"flood-{start + i}", ts, (0.5, -0.5, 0.0)) for i in range(fresh)]
    return out


@pytest.mark.slow  # ~10-60 s: `./dev quick` skips it
def test_million_stream_ids_bounded_memory(model: OnnxStepModel) -> None:
    eng = Engine(model, max_streams=MAX_STREAMS)
    fresh = BATCH - HOT
    n_batches = -(-(N_IDS - HOT) // fresh)  # at least N_IDS distinct ids
    warm = max(n_batches // 100, 5)  # allocator, onnxruntime arena and table reach steady state
    mark = n_batches // 10  # growth after ~10% of the ids vs after all of them
    taken = 0
    peak_rss = 0.0
    base_rss = growth_mark = 0.0
    t_process = t_take = 0.0
    gc.collect()
    t_start = time.perf_counter()
    for b in range(n_batches):
        readings = batch(b, fresh)
        t = time.perf_counter()
        outs = eng.process(readings)
        t_process += time.perf_counter() - t
        assert len(eng.table) <= MAX_STREAMS
        t = time.perf_counter()
        rows = eng.take_evicted()  # the daemon spills or drops these
        t_take += time.perf_counter() - t
        taken += len(rows)
        if b % 97 == 0:  # spot checks, cheap enough to keep the loop fast
            assert all(isinstance(o, Result) for o in outs)
            assert all(r.stream.startswith("flood-") and r.steps == 1 and r.stream not in eng.table for r in rows)
        if b == warm:
            gc.collect()
            base_rss = rss_mb()
        if b % 50 == 0 or b == mark:
            peak_rss = max(peak_rss, rss_mb())
        if b == mark:
            growth_mark = rss_mb() - base_rss
    elapsed = time.perf_counter() - t_start
    gc.collect()
    growth_end = rss_mb() - base_rss
    peak_growth = max(peak_rss, rss_mb()) - base_rss

    ids = n_batches * fresh + HOT
    assert len(eng.table) == MAX_STREAMS
    assert eng.stats.evicted == ids - MAX_STREAMS == taken  # every evicted row came out, once
    assert eng.stats.evicted_dropped == 0 and eng.evicted == []
    for h in range(HOT):  # the active streams were never evicted: their state has every step
        assert eng.table.row(f"hot-{h}").steps == n_batches
    print(
        f"\nflood: {ids:,} stream ids, max_streams={MAX_STREAMS:,}, {n_batches:,} process calls of "
        f"{BATCH:,}: {elapsed:.1f} s ({elapsed / ids * 1e6:.1f} us/reading; process {t_process:.1f} s, "
        f"take_evicted {t_take:.2f} s); table {eng.table.nbytes() / 1024:.0f} KiB; RSS growth after "
        f"warm-up: {growth_mark:.1f} MB after {mark * fresh:,} ids, {growth_end:.1f} MB after {ids:,}, "
        f"peak {peak_growth:.1f} MB (RSS {peak_rss:.0f} MB)"
    )
    assert peak_growth < 32, f"RSS grew by {peak_growth:.1f} MB"
    assert growth_end - growth_mark < 8, "memory grows with the number of stream ids"


@pytest.mark.slow  # ~10-60 s: `./dev quick` skips it
def test_evicted_rows_are_bounded_when_nobody_takes_them(model: OnnxStepModel) -> None:
    """A daemon configured to drop evicted state never calls take_evicted: the engine keeps at most
    max_evicted untaken rows (plus one batch's), dropping the oldest and counting them."""
    n_batches = 25  # tracemalloc slows allocation-heavy code several times over: keep this short
    fresh = BATCH - HOT
    eng = Engine(model, max_streams=MAX_STREAMS)
    for b in range(5):  # warm up outside the traced window
        eng.process(batch(b, fresh))
    gc.collect()
    tracemalloc.start()
    try:
        for b in range(5, n_batches):
            eng.process(batch(b, fresh))
            assert len(eng.evicted) <= eng.max_evicted + BATCH
            assert eng.stats.evicted == eng.stats.evicted_dropped + len(eng.evicted)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert eng.stats.evicted == n_batches * fresh + HOT - MAX_STREAMS
    assert eng.stats.evicted_dropped > 0
    rows = eng.take_evicted()
    assert len(rows) <= eng.max_evicted + BATCH and eng.take_evicted() == []
    # The rows kept are the most recently evicted ones.
    assert rows[-1].stream == f"flood-{(n_batches - 1) * fresh - 1}"
    print(
        f"\nnobody takes: {eng.stats.evicted:,} evicted, {eng.stats.evicted_dropped:,} dropped, "
        f"{len(rows):,} kept; traced Python heap peak {peak / 2**20:.1f} MiB (current {current / 2**20:.1f})"
    )
    assert peak < 24 * 2**20  # 18.2 MiB measured once the surprise channel's 13 columns joined each row

    none_kept = Engine(model, max_streams=MAX_STREAMS, max_evicted=0)
    for b in range(5):
        none_kept.process(batch(b, fresh))
    assert none_kept.evicted == [] and none_kept.stats.evicted == none_kept.stats.evicted_dropped > 0


def test_batch_larger_than_the_table(model: OnnxStepModel) -> None:
    """One process call with more new streams than max_streams: bounded table, every row handed out."""
    eng = Engine(model, max_streams=100)
    readings = [Reading(f"s{i}", T0, (1.0, 2.0, 3.0)) for i in range(2_500)]
    outs = eng.process(readings)
    assert all(isinstance(o, Result) for o in outs) and len(eng.table) == 100
    rows = eng.take_evicted()
    assert len(rows) == 2_400 == eng.stats.evicted and eng.stats.evicted_dropped == 0
    assert {r.stream for r in rows} | set(eng.table.slots) == {r.stream for r in readings}


def test_restoring_a_spilled_row_into_a_full_table_hands_out_the_row_it_evicts(model: OnnxStepModel) -> None:
    """A spilled stream coming back into a full table: its row is put back exactly, and the row
    evicted to make room is returned (not silently lost)."""
    eng = Engine(model, max_streams=3)
    for i in range(3):
        eng.process([Reading(f"s{k}", T0 + i, (float(i), float(k), 1.0)) for k in range(3)])
    eng.process([Reading("s3", T0 + 3, (1.0, 1.0, 1.0))])
    (spilled,) = eng.take_evicted()  # s0, least recently seen when s3 arrived
    assert spilled.stream == "s0" and spilled.steps == 3 and "s0" not in eng.table
    evicted = eng.table.restore(spilled)
    assert evicted is not None and evicted.stream == "s1" and evicted.steps == 3
    back = eng.table.row("s0")
    assert (back.last_ts, back.steps, back.anomalies) == (spilled.last_ts, spilled.steps, spilled.anomalies)
    for a, b in zip([*back.states, back.prediction], [*spilled.states, spilled.prediction]):
        assert (a == b).all()
    assert len(eng.table) == 3


@pytest.mark.slow  # ~10-60 s: `./dev quick` skips it
def test_flood_with_spill_keeps_memory_and_disk_bounded(model: OnnxStepModel, tmp_path: Path) -> None:
    """The daemon's default (`engine.evicted = "spill"`): evicted rows go to SQLite, bounded."""
    from edge_lstm.durable.spill import SqliteSpill

    max_spilled = 10_000
    columns = Engine(model).table.column_specs
    store = SqliteSpill(
        tmp_path / "spill.db", model.state_shapes, len(model.meta.output.names), columns=columns, max_rows=max_spilled
    )
    eng = Engine(model, max_streams=MAX_STREAMS, spill=store)
    fresh = BATCH - HOT
    n_batches = 80  # ~80,000 distinct ids: 8x past the spill bound
    sizes = []
    for b in range(n_batches):
        eng.process(batch(b, fresh))
        if b in (n_batches // 2, n_batches - 1):
            gc.collect()
            sizes.append((rss_mb(), sum(p.stat().st_size for p in tmp_path.glob("spill.db*"))))
    assert len(eng.table) <= MAX_STREAMS and eng.take_evicted() == []
    assert store.rows == max_spilled and store.dropped == eng.stats.evicted - max_spilled
    (rss_half, disk_half), (rss_end, disk_end) = sizes
    print(
        f"\nspill flood: {n_batches * fresh:,} ids, {eng.stats.evicted:,} evicted, {store.rows:,} kept, "
        f"{store.dropped:,} dropped; RSS {rss_half:.0f} -> {rss_end:.0f} MB, "
        f"disk {disk_half / 2**20:.1f} -> {disk_end / 2**20:.1f} MiB"
    )
    assert rss_end - rss_half < 20
    assert disk_end < 2 * max(disk_half, 1 << 20)  # the db does not keep growing past its bound
    # Hot streams kept their state throughout; a spilled flood stream comes back with its row.
    assert eng.table.row("hot-0").steps == n_batches
    back = f"flood-{(n_batches - 3) * fresh}"
    assert back not in eng.table
    eng.process([Reading(back, T0 + n_batches + 1, (0.0, 0.0, 0.0))])
    assert eng.table.row(back).steps == 2 and eng.stats.unspilled == 1
