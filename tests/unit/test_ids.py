"""The state table's stream id index (edge_lstm/ids.py): exact under hash collisions, removals, rebuilds
and compaction; the table keeps its eviction order and checkpoints round-trip with it."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

from edge_lstm import ids
from edge_lstm.durable import checkpoint
from edge_lstm.ids import StreamIndex
from edge_lstm.state import StateTable


@pytest.fixture(params=["cached", "uncached"])
def cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: with the dict in front of the arrays, and without it (every lookup probes)."""
    if request.param == "uncached":
        monkeypatch.setattr(ids, "CACHE", 0)
    return str(request.param)


def check(index: StreamIndex, ref: dict[str, int], absent: list[str]) -> None:
    assert len(index) == len(ref)
    names = list(ref)
    for batch in (names[:3], names, names[::-1] + absent, absent):  # the scalar and the array paths
        assert index.find_many(batch) == [ref.get(s, -1) for s in batch]
    for s, slot in ref.items():
        assert s in index and index[s] == slot and index.get(s) == slot
    for s in absent:
        assert s not in index and index.get(s) is None and index.get(s, -1) == -1
    assert index.names(list(ref.values())) == names
    # The checkpoint's id list, from the stored bytes: as the checkpoint encoded each str before.
    keys = [s.encode("utf-8", "surrogatepass") for s in names]
    stored = index.packed(np.asarray(list(ref.values()), np.intp))
    assert stored == b"".join(struct.pack("<I", len(k)) + k for k in keys)


@pytest.mark.parametrize("hash_fn", [hash, lambda s: 7, lambda s: len(s) % 3 - 1], ids=["hash", "one", "three"])
def test_lookups_are_exact_under_collisions(cache: str, hash_fn: object) -> None:
    """One hash for every id (one probe chain), or three: ids of equal hash stay apart, by their bytes."""
    index = StreamIndex(200, hash_fn=hash_fn)  # type: ignore[arg-type]
    ref = {f"s{i}": 199 - i for i in range(150)}
    items = list(ref.items())
    index.add_many([s for s, _ in items[:5]], [v for _, v in items[:5]])  # scalar insert
    index.add_many([s for s, _ in items[5:]], [v for _, v in items[5:]])  # array insert
    check(index, ref, ["s150", "s1x", "", "t0"])
    # Removing from the middle of a chain leaves the rest reachable (tombstones), and slots come back.
    gone = [f"s{i}" for i in range(0, 150, 3)]
    index.remove_many([ref[s] for s in gone[:2]], gone[:2])
    index.remove_many([ref[s] for s in gone[2:]])
    freed = {s: ref.pop(s) for s in gone}
    check(index, ref, gone)
    back = gone[::2]
    index.add_many(back, [freed[s] for s in back])
    ref.update({s: freed[s] for s in back})
    check(index, ref, gone[1::2])


def test_churn_against_a_dict(cache: str) -> None:
    """Random adds and removes of ids of many lengths (non-ASCII and lone surrogates too), far more than
    the capacity over time: tombstones force rebuilds and garbage compactions of the id buffer."""
    rng = random.Random(5)
    cap = 64
    index = StreamIndex(cap)
    ref: dict[str, int] = {}
    free = list(range(cap))
    alphabet = "ab\u00e9\u4e2d\ud800\U0001f600-/"
    rebuilt = compacted = 0
    for _ in range(300):
        buckets, arena = index.buckets, index._arena
        if ref and (rng.random() < 0.5 or not free):
            gone = rng.sample(list(ref), rng.randint(1, min(len(ref), 40)))
            index.remove_many([ref[s] for s in gone], gone if rng.random() < 0.5 else None)
            free += [ref.pop(s) for s in gone]
        else:
            k = rng.randint(1, min(len(free), 60))
            new = {"".join(rng.choices(alphabet, k=rng.randint(1, 120))) for _ in range(k)} - ref.keys()
            slots = [free.pop() for _ in new]
            index.add_many(list(new), slots)
            ref.update(zip(new, slots))
        rebuilt += index.buckets is not buckets
        compacted += index._arena is not arena
        assert index.find_many(list(ref)) == list(ref.values())
    check(index, ref, ["zz", "a" * 121])
    assert rebuilt and compacted


def test_bucket_array_stays_at_most_half_full_and_compact() -> None:
    """The memory the index costs: buckets for twice the capacity, the ids' bytes, no dict of them all."""
    index = StreamIndex(1000)
    index.add_many([f"sensor-{i:06d}" for i in range(1000)], list(range(1000)))
    assert len(index.buckets) == 2048
    assert index._end == 13 * 1000
    assert len(index.cache) <= ids.CACHE


def table_with(n: int, hash_fn: object) -> StateTable:
    table = StateTable([(1, 2)], 1, max_streams=n)
    table.index = StreamIndex(n, hash_fn=hash_fn)  # type: ignore[arg-type]
    return table


@pytest.mark.parametrize("hash_fn", [hash, lambda s: 1], ids=["hash", "one"])
def test_table_evicts_least_recently_seen_first(cache: str, hash_fn: object) -> None:
    table = table_with(4, hash_fn)
    table.acquire_many(["a", "b", "c", "d"])
    table.acquire_many(["b", "a"])  # recency: c, d, b, a
    assert list(table.slots) == ["c", "d", "b", "a"]
    slots, rows, n, fresh = table.acquire_many(["e", "a", "f"])
    assert [r.stream for r in rows] == ["c", "d"] and n == 2 and fresh == [0, 2]
    assert slots.tolist() == [table.index["e"], table.index["a"], table.index["f"]]
    assert slots[0] == 2 and slots[2] == 3  # the least recently seen's slot is handed out first
    assert list(table.slots) == ["b", "e", "a", "f"]
    assert "c" not in table and "d" not in table and len(table) == 4
    table.evict("e")
    assert list(table.slots) == ["b", "a", "f"]
    table.last_ts[[table.index[s] for s in table.slots]] = [5.0, 1.0, 9.0]
    assert table.idle_streams(6.0) == ["b", "a"]


@pytest.mark.parametrize("hash_fn", [hash, lambda s: 1], ids=["hash", "one"])
def test_checkpoint_round_trip(cache: str, hash_fn: object, tmp_path: Path) -> None:
    """Streams, their LRU order and their rows through a checkpoint, into a table whose index collides."""
    table = table_with(300, hash_fn)
    streams = [f"s{i}" for i in range(300)]
    table.acquire_many(streams[:200])
    table.acquire_many(streams[200:])  # the table full
    table.acquire_many(streams[50:10:-1])
    for s, slot in table.slots.items():
        table.states[0][slot] = float(len(s)) + slot
        table.last_ts[slot] = slot
    path = tmp_path / "ck"
    checkpoint.save(path, table, model_sha256="m", journal_segment=0)
    ck = checkpoint.load(path, model_sha256="m", state_shapes=[(1, 2)])
    assert ck is not None
    other = table_with(300, hash_fn)
    for row in ck.rows:
        other.restore(row)
    assert list(other.slots) == list(table.slots)
    for s in table.slots:
        a, b = table.row(s), other.row(s)
        assert np.array_equal(a.states[0], b.states[0]) and a.last_ts == b.last_ts
