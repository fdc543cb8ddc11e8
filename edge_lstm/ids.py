"""The state table's stream id → slot index, with no Python object per stream (issue 22).

A dict of str → int cost ~140 bytes per stream at 100,000 streams (the id string ~64, its slot as a
Python int 32, the dict's share ~38, a slot → id list 8): 14 MB of a 200 MB budget. Here the index is
numpy arrays, ~37 bytes per stream with 14-character ids:

- each slot's id as UTF-8 bytes in one buffer (the `arena`: a 4-byte offset and a 4-byte length per
  slot), and the low 32 bits of its `hash()` (4 bytes: they choose its bucket, and a bucket's entry is
  compared by its bytes only when they match);
- an open-addressing table of buckets (linear probing, at most half full: 2-4 buckets of 4 bytes per
  slot of the capacity), each holding slot + 1, 0 when empty, -1 for a removed entry (a tombstone:
  probes go on past it; the buckets are rebuilt once entries and tombstones fill three quarters).

A lookup compares the hash, then the id's bytes (two distinct ids of equal hash never share a slot):
~1 µs an id, where a dict lookup is ~0.05 µs. So the ids looked up or added last (up to `CACHE` of
them) are also kept in a dict (`cache`, cleared when full): a daemon with up to that many streams, or a
large table with fewer active ones, looks ids up as fast as with a dict of every stream; only the others
cost a probe. A batch of more than `SCALAR_BATCH` uncached ids is probed with array operations, a
smaller one by a Python loop (a numpy call costs more than a short loop).

The ids of removed streams stay in the arena as garbage until it is full; then the live ids are copied
into a new one (compacted), twice as large if they fill half of it. The arrays are anonymous mappings of
their own (`lazy_zeros`): untouched pages cost no memory, and a forked checkpoint writer sees a
copy-on-write snapshot.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["StreamIndex", "lazy_zeros"]

# Up to this many uncached ids, a lookup is a Python loop (~1-1.4 µs an id); above it, array operations
# (~25 µs a batch, then ~1 µs an id).
SCALAR_BATCH = 48
# Ids kept in the dict in front of the arrays: ~140 bytes each, 0.6 MB when full.
CACHE = 4096

_EMPTY, _REMOVED = 0, -1
_LOW = 0xFFFFFFFF  # the hash bits kept
_ARENA_MAX = 1 << 32  # offsets are uint32


def lazy_zeros(shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
    """A zeroed array whose pages cost memory only once written: an anonymous mapping of its own.
    (`np.zeros` gets that only above glibc's mmap threshold, which moves: below it the array comes from
    the heap, where memory reused is zeroed, and so resident, at once.)"""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count * dt.itemsize < mmap.PAGESIZE * 4:
        return np.zeros(shape, dt)
    # MAP_PRIVATE: copy-on-write across a fork (a forked checkpoint writer needs the snapshot; Python's
    # default for an anonymous mmap is MAP_SHARED, which the child would see the worker write into).
    pages = mmap.mmap(-1, count * dt.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dt, count).reshape(shape)


# Ids are encoded with surrogatepass: any str round-trips (a lone surrogate too), as in the checkpoint's
# id list. (Written out at each use: a function call per id costs more than the encoding.)
_UTF8, _SP = "utf-8", "surrogatepass"


class StreamIndex:
    """stream id → slot for slots 0 .. capacity - 1; slots are chosen by the caller (the state table)."""

    def __init__(self, capacity: int, *, hash_fn: Callable[[str], int] = hash) -> None:
        self.capacity = capacity
        self._hash_fn = hash_fn  # tests give a colliding one
        self._count = 0
        self.cache: dict[str, int] = {}  # ids looked up or added recently -> slot
        self.hashes = lazy_zeros((capacity,), np.uint32)  # the low 32 bits of each id's hash()
        self.offsets = lazy_zeros((capacity,), np.uint32)
        self.lengths = lazy_zeros((capacity,), np.int32)  # the id's length in bytes + 1; 0: slot unused
        self._arena = lazy_zeros((max(capacity * 16, 4096),), np.uint8)  # grown by compaction
        self._end = 0  # bytes of the arena in use (live ids and garbage)
        self._garbage = 0
        self._new_buckets(_buckets_for(capacity))

    def _new_buckets(self, n: int) -> None:
        self._mask = n - 1
        self.buckets = lazy_zeros((n,), np.int32)
        self._removed = 0
        self._views()

    def _views(self) -> None:
        # memoryviews index to Python ints ~4x faster than ndarray scalars (the scalar path).
        self._b, self._h = self.buckets.data, self.hashes.data
        self._o, self._n, self._a = self.offsets.data, self.lengths.data, self._arena.data

    def __len__(self) -> int:
        return self._count

    def __contains__(self, stream: object) -> bool:
        return isinstance(stream, str) and self.get(stream) is not None

    def __getitem__(self, stream: str) -> int:
        slot = self.get(stream)
        if slot is None:
            raise KeyError(stream)
        return slot

    def get(self, stream: str, default: int | None = None) -> int | None:
        slot = self.cache.get(stream)
        if slot is None:
            slot = self._find(stream, self._hash_fn(stream) & _LOW)
        return default if slot < 0 else slot

    def _remember(self, streams: Sequence[str], slots: Iterable[int]) -> None:
        if len(self.cache) + len(streams) > CACHE:
            self.cache.clear()  # (an LRU would cost more per lookup than the probes it saves)
        if len(streams) <= CACHE:
            self.cache.update(zip(streams, slots))

    def _find(self, stream: str, h: int) -> int:
        b, hs, mask = self._b, self._h, self._mask
        i = h & mask
        key: bytes | None = None
        while (v := b[i]) != _EMPTY:
            if v > 0 and hs[v - 1] == h:
                key = stream.encode(_UTF8, _SP) if key is None else key
                o, n = self._o[v - 1], self._n[v - 1] - 1
                if self._a[o : o + n] == key:
                    return v - 1
            i = (i + 1) & mask
        return -1

    def find_many(self, streams: Sequence[str]) -> list[int]:
        """The slot of each id, -1 for an id not in the index."""
        get = self.cache.get
        out = [get(s, -1) for s in streams]
        if -1 not in out:
            return out
        missed = [j for j, slot in enumerate(out) if slot < 0]
        ids = [streams[j] for j in missed]
        found = self._find_many(ids)
        for j, slot in zip(missed, found):
            out[j] = slot
        hits = [k for k, slot in enumerate(found) if slot >= 0]
        if hits:
            self._remember([ids[k] for k in hits], [found[k] for k in hits])
        return out

    def _find_many(self, streams: Sequence[str]) -> list[int]:
        n = len(streams)
        if n <= SCALAR_BATCH:
            hf, find = self._hash_fn, self._find
            return [find(s, hf(s) & _LOW) for s in streams]
        h = np.fromiter(map(self._hash_fn, streams), np.int64, n) & _LOW
        pos = h & self._mask
        cand = np.full(n, -1, np.int64)  # the first slot of an equal hash on each id's probe path
        todo = np.arange(n)
        while len(todo):
            v = self.buckets[pos[todo]]
            hit = v > 0
            hit[hit] = self.hashes[v[hit] - 1] == h[todo[hit]]
            cand[todo[hit]] = v[hit] - 1
            todo = todo[(v != _EMPTY) & ~hit]
            pos[todo] = (pos[todo] + 1) & self._mask
        out: list[int] = cand.tolist()
        found = np.flatnonzero(cand >= 0)
        for k in self._mismatched(cand[found], [streams[j] for j in found.tolist()]):
            j = int(found[k])
            out[j] = self._find(streams[j], int(h[j]))  # equal hash bits, another id: probe on
        return out

    def _mismatched(self, slots: np.ndarray, streams: list[str]) -> list[int]:
        """The positions of the ids that are not the ones at their slots, compared as bytes in arrays
        (a Python comparison per id costs ~1 µs)."""
        joined = "".join(streams)
        blob = joined.encode(_UTF8, _SP)  # one call; ASCII ids: as long as the str
        if len(blob) == len(joined):
            lens = np.fromiter(map(len, streams), np.int64, len(streams))
        else:
            keys = [s.encode(_UTF8, _SP) for s in streams]
            lens = np.fromiter(map(len, keys), np.int64, len(keys))
        same = self.lengths[slots].astype(np.int64) - 1 == lens
        ends = np.cumsum(lens)
        starts = ends - lens
        pos = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(starts, lens)
        src = np.repeat(self.offsets[slots].astype(np.int64), lens) + pos
        # An id longer than the one stored reads past it (and is wrong anyway): not past the arena.
        stored = self._arena[np.minimum(src, len(self._arena) - 1, out=src)]
        differ = np.concatenate(([0], np.cumsum(stored != np.frombuffer(blob, np.uint8))))
        wrong: list[int] = np.flatnonzero(~same | (differ[ends] > differ[starts])).tolist()
        return wrong

    def add_many(self, streams: Sequence[str], slots: Sequence[int]) -> None:
        """Index each id (not yet in the index) at its slot (unused)."""
        if not streams:
            return
        if self._count + self._removed + len(streams) > len(self.buckets) // 4 * 3:
            self._rebuild(extra=len(streams))
        keys = [s.encode(_UTF8, _SP) for s in streams]
        sl = np.asarray(slots, np.intp)
        lens = np.fromiter(map(len, keys), np.int64, len(keys))
        blob = b"".join(keys)
        if self._end + len(blob) > len(self._arena):
            self._compact(len(blob))
        self.offsets[sl] = self._end + np.cumsum(lens) - lens
        self.lengths[sl] = lens + 1
        self._arena[self._end : self._end + len(blob)] = np.frombuffer(blob, np.uint8)
        self._end += len(blob)
        h = np.fromiter(map(self._hash_fn, streams), np.int64, len(streams)) & _LOW
        self.hashes[sl] = h
        self._count += len(streams)
        self._remember(streams, slots)
        if len(streams) <= SCALAR_BATCH:
            b, mask = self._b, self._mask
            for slot, hh in zip(slots, h.tolist()):
                i = hh & mask
                while b[i] > 0:
                    i = (i + 1) & mask
                self._removed -= b[i] == _REMOVED
                b[i] = slot + 1
            return
        self._place(h, sl)

    def _place(self, h: np.ndarray, slots: np.ndarray) -> None:
        """Put the slots in the buckets, each at the first free bucket (empty or removed) from its
        hash's: each round, of the ids that found the same free bucket, the first takes it."""
        pos = h & self._mask
        todo = np.arange(len(h))
        while len(todo):
            v = self.buckets[pos[todo]]
            free = todo[v <= 0]
            _, first = np.unique(pos[free], return_index=True)
            won = free[first]
            self._removed -= int(np.count_nonzero(self.buckets[pos[won]] == _REMOVED))
            self.buckets[pos[won]] = slots[won] + 1
            left = np.ones(len(h), bool)
            left[won] = False
            todo = todo[left[todo]]
            pos[todo] = (pos[todo] + 1) & self._mask  # a bucket just taken is passed over too

    def remove_many(self, slots: Sequence[int], names: Sequence[str] | None = None) -> None:
        """Drop the ids at these (used) slots (`names`: their ids, if the caller has them)."""
        if not slots:
            return
        if self.cache:
            for stream in self.names(slots) if names is None else names:
                self.cache.pop(stream, None)
        sl = np.asarray(slots, np.intp)
        pos = self.hashes[sl].astype(np.int64) & self._mask
        todo = np.arange(len(sl))
        while len(todo):
            at = self.buckets[pos[todo]] == sl[todo] + 1
            self.buckets[pos[todo[at]]] = _REMOVED
            todo = todo[~at]
            pos[todo] = (pos[todo] + 1) & self._mask
        self._removed += len(sl)
        self._count -= len(sl)
        self._garbage += int(self.lengths[sl].sum()) - len(sl)
        self.lengths[sl] = 0

    def names(self, slots: Sequence[int]) -> list[str]:
        """The ids at these (used) slots."""
        if len(slots) <= SCALAR_BATCH:
            a, o, n = self._a, self._o, self._n
            return [str(a[o[i] : o[i] + n[i] - 1], _UTF8, _SP) for i in slots]
        # Many: their bytes gathered into one bytes object first (slicing bytes is cheaper than a view).
        sl = np.asarray(slots, np.intp)
        lens = self.lengths[sl].astype(np.int64) - 1
        ends = np.cumsum(lens)
        pos = np.arange(int(ends[-1])) - np.repeat(ends - lens, lens)
        blob = self._arena[np.repeat(self.offsets[sl].astype(np.int64), lens) + pos].tobytes()
        bounds = [0, *ends.tolist()]
        return [blob[bounds[k] : bounds[k + 1]].decode(_UTF8, _SP) for k in range(len(bounds) - 1)]

    def packed(self, slots: np.ndarray) -> bytes:
        """The ids at these (used) slots as the checkpoint stores them: each its length (u32, little
        endian), then its UTF-8 bytes (surrogatepass), with no str made."""
        lens = self.lengths[slots].astype(np.int64) - 1
        ends = np.cumsum(lens + 4)  # each record: 4 bytes of length, then the id
        out = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
        starts = ends - lens - 4
        out[starts[:, None] + np.arange(4)] = lens.astype("<u4").view(np.uint8).reshape(-1, 4)
        first = np.cumsum(lens) - lens  # each id's first byte among all ids' bytes
        pos = np.arange(int(lens.sum())) - np.repeat(first, lens)
        out[np.repeat(starts + 4, lens) + pos] = self._arena[np.repeat(self.offsets[slots], lens) + pos]
        return out.tobytes()

    def name(self, slot: int) -> str:
        return self.names((slot,))[0]

    def _rebuild(self, extra: int) -> None:
        """New buckets for the ids in use (tombstones dropped), doubled if `extra` more would fill them
        beyond three quarters."""
        used = np.flatnonzero(self.lengths)
        n = len(self.buckets)
        while (len(used) + extra) > n // 4 * 3:
            n *= 2
        self._new_buckets(n)
        self._place(self.hashes[used].astype(np.int64), used)

    def _compact(self, needed: int) -> None:
        """A new arena with the live ids only (dense, in slot order), grown if they and `needed` more
        bytes would fill more than half of it."""
        used = np.flatnonzero(self.lengths)
        lens = self.lengths[used].astype(np.int64) - 1
        live = int(lens.sum())
        size = len(self._arena)
        while live + needed > size // 2:
            size *= 2
        if live + needed > _ARENA_MAX:
            raise MemoryError("the stream ids in the state table exceed 4 GiB")
        size = min(size, _ARENA_MAX)
        arena = lazy_zeros((size,), np.uint8)
        starts = np.cumsum(lens) - lens
        src = np.repeat(self.offsets[used] - starts, lens) + np.arange(live)
        arena[:live] = self._arena[src]
        self.offsets[used] = starts
        self._arena, self._end, self._garbage = arena, live, 0
        self._views()


def _buckets_for(capacity: int) -> int:
    """A power of two of at least twice the capacity: at most half full when the table is."""
    return 1 << max(3, (2 * capacity - 1).bit_length())
