"""The engine: readings in, results out. Pure: no I/O, no clock, no threads.

Readings waiting together are stepped in one model call per *round*; a stream appears at most once per
round, so several readings of one stream are applied in arrival order in successive rounds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from .alarm import AlarmPolicy, table_columns
from .npfast import count_nonzero, i64
from .ports import SpillStore, StepModel
from .reading import Reading, Rejection
from .result import AlarmEvent, Result, results
from .scoring import Scored, Scorer, ScoringConfig
from .state import Column, Gathered, StateTable, StreamState, as_rows


@dataclass
class Stats:
    readings: int = 0
    results: int = 0
    anomalies: int = 0
    model_calls: int = 0
    evicted: int = 0
    unspilled: int = 0  # returning streams restored from the spill store
    evicted_dropped: int = 0  # evicted rows never handed out by take_evicted (see Engine.max_evicted)
    alarms_raised: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))


Outcome = Result | Rejection


class Engine:
    def __init__(
        self,
        model: StepModel,
        *,
        max_streams: int = 10_000,
        max_evicted: int | None = None,
        spill: SpillStore | None = None,
        scoring: ScoringConfig | None = None,
        alarms: AlarmPolicy | None = None,
    ) -> None:
        """`spill`: where evicted streams' rows go and come back from (spill.py); without it they
        are collected for `take_evicted` (at most `max_evicted`) and otherwise dropped.
        `scoring`, `alarms`: per-stream scoring and alarm hysteresis settings (defaults when None)."""
        self.model = model
        self.spill = spill
        meta = model.meta
        self.meta = meta
        self.scorer = Scorer(meta, scoring or ScoringConfig())
        self.alarms = alarms or AlarmPolicy()
        self.forecast = meta.output.kind == "forecast"
        self.names = tuple(meta.output.names)
        self.horizon = meta.output.steps  # > 1: the output is a K-step forecast, published as `forecast`
        self.warmup = max(meta.warmup_steps, 1) if self.forecast else meta.warmup_steps
        self.table = StateTable(
            model.state_shapes,
            len(self.names),
            max_streams=max_streams,
            columns=table_columns(self.scorer.columns),
        )
        self._offset = np.asarray(meta.scaling.offset, np.float64)
        self._inv_scale = 1.0 / np.asarray(meta.scaling.scale, np.float64)
        self.stats = Stats()
        # Rows evicted since the caller last took them, bounded so that a caller that never takes
        # them (evicted state configured to be dropped) does not grow memory without limit: at the
        # start of each process() call, untaken rows beyond `max_evicted` (default: max_streams) are
        # dropped oldest first; 0 collects none. Dropped rows are counted in stats.evicted_dropped.
        # A caller that takes after every process() call never loses a row.
        self.max_evicted = max_streams if max_evicted is None else max_evicted
        if self.max_evicted < 0:
            raise ValueError("max_evicted must be >= 0")
        self.evicted: list[StreamState] = []

    def take_evicted(self) -> list[StreamState]:
        out, self.evicted = self.evicted, []
        return out

    def _trim_evicted(self) -> None:
        excess = len(self.evicted) - self.max_evicted
        if excess > 0:
            del self.evicted[:excess]
            self.stats.evicted_dropped += excess

    def process(self, batch: Sequence[Reading | Rejection]) -> list[Outcome]:
        """Step every reading; return one outcome per input, in input order.

        Rejections passed in (from decoding) are counted and returned in place, so the caller keeps
        one ordered list for acknowledging and publishing.
        """
        self._trim_evicted()
        outcomes: list[Outcome | None] = [None] * len(batch)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        rejected = self.stats.rejected
        for i, item in enumerate(batch):
            if type(item) is Rejection:
                rejected[item.reason] += 1
                outcomes[i] = item
                continue
            k = seen.get(item.stream, 0)
            seen[item.stream] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        self.stats.readings += sum(seen.values())
        cap = self.table.max_streams
        for idx in rounds:
            # A round bigger than the table could evict its own streams: split it.
            for start in range(0, len(idx), cap):
                part = idx[start : start + cap]
                for i, out in zip(part, self._round([batch[i] for i in part])):  # type: ignore[misc]
                    outcomes[i] = out
        return outcomes  # type: ignore[return-value]

    def _round(self, readings: list[Reading]) -> list[Outcome]:
        """One model call over readings of distinct streams. This is the per-reading hot path:
        Python work per reading is kept to dictionary lookups and list building."""
        out: list[Outcome | None] = [None] * len(readings)
        ts = np.fromiter([r.ts for r in readings], np.float64, len(readings))
        take, known = self._fresh(readings, ts, out)
        if not take:
            return out  # type: ignore[return-value]
        table = self.table
        s = self._acquire([readings[j] for j in take], known)  # looked up once, in _fresh
        s, rows, take = _slot_order(s, take)  # rows: one slice when they can be (a third of a fancy write's cost)
        values = np.asarray([readings[j].values for j in take], np.float64)
        u = (values - self._offset) * self._inv_scale
        y, new_states = self.model.step(u.astype(np.float32), [a[rows] for a in table.states])
        self.stats.model_calls += 1
        for a, ns in zip(table.states, new_states):
            a[rows] = ns

        steps = table.steps[s]
        cols = table.gather(rows)  # copies, gathered when first used; scattered back below
        if self.forecast:
            predicted = table.prediction[s]
            # The next reading's prediction is the forecast's first step (the first len(names) columns).
            predictions = self.scorer.unscale(y if self.horizon == 1 else y[:, : len(self.names)])
            table.prediction[rows] = predictions
        else:
            predicted = None
            predictions = y.astype(np.float64)
        tss = ts[take]
        gap = tss - table.last_ts[rows]  # +inf for a stream's first reading (last_ts starts at -inf)
        warming = steps < i64(self.warmup)  # 0-d int64 operands (npfast.i64): ~1,600 instructions less a call
        scored = self.scorer.score(cols, values, u, y, predicted, steps, warming, gap, tss)
        likelihood = scored.likelihood()  # an array, or a function the alarm calls only if it needs it
        surprise = scored.signals.get("surprise")
        raised, cleared = self.alarms.update(cols, scored.flags, scored.signals["score"], tss, likelihood, surprise)
        cols.scatter()
        flags = scored.flags
        table.steps[rows] = steps + i64(1)  # rows: a slice when it can be (a third of a fancy write's cost)
        table.anomalies[rows] += flags
        table.last_ts[rows] = tss
        self.stats.results += len(take)
        self.stats.anomalies += int(count_nonzero(flags))  # a sixth of ndarray.sum()'s cost
        events = self._events(readings, take, cols, raised, cleared, scored.shifted(cleared))
        self._results(readings, take, out, scored, warming, predictions, cols["alarm.raised"], events)
        if self.horizon > 1:
            for j, fc in zip(take, self._forecasts(y, tss, gap)):
                out[j].forecast = fc  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    def _fresh(self, readings: list[Reading], ts: np.ndarray, out: list[Outcome | None]) -> tuple[list[int], list[int]]:
        """The readings newer than their stream's last one, and their slots (-1: a new stream); the
        others (a duplicate, or out of order by event time) are rejected into `out`."""
        n = len(readings)
        known = self.table.index.find_many([r.stream for r in readings])
        stale: set[int] = set()
        kidx = range(n) if -1 not in known else [j for j in range(n) if known[j] >= 0]  # all known: no lists
        if kidx:
            last = self.table.last_ts[known if len(kidx) == n else [known[j] for j in kidx]]
            older = (ts if len(kidx) == n else ts[kidx]) <= last
            for m in np.flatnonzero(older).tolist() if count_nonzero(older) else ():
                j = kidx[m]
                r, prev = readings[j], float(last[m])
                reason = "duplicate" if r.ts == prev else "out_of_order"
                self.stats.rejected[reason] += 1
                out[j] = Rejection(r.stream, reason, f"ts {r.ts:.6f} <= last processed ts {prev:.6f}")
                stale.add(j)
        take = [j for j in range(n) if j not in stale] if stale else list(range(n))
        return take, ([known[j] for j in take] if stale else known)

    def _acquire(self, readings: list[Reading], known: list[int]) -> np.ndarray:
        """The table slots of the readings' streams (`known`: -1 if not in the table); streams evicted to
        make room go to the spill store (or `evicted`), returning streams continue from their spilled rows."""
        table, spill = self.table, self.spill
        s, evicted, n_evicted, fresh = table.acquire_many(
            [r.stream for r in readings], keep_evicted=spill is not None or self.max_evicted > 0, known=known
        )
        self.stats.evicted += n_evicted
        if spill is not None:
            spill.put(evicted)
            # A returning stream continues from its spilled row (the version before this reading).
            for pos in fresh:
                r = readings[pos]
                row = spill.get(r.stream, r.ts)
                if row is not None:
                    table.put_row(int(s[pos]), row)
                    self.stats.unspilled += 1
        elif evicted:
            self.evicted.extend(evicted)
        else:
            self.stats.evicted_dropped += n_evicted
        return s

    def _events(
        self,
        readings: list[Reading],
        take: list[int],
        cols: Gathered,
        raised: np.ndarray,
        cleared: np.ndarray,
        shifted: np.ndarray | None = None,
    ) -> dict[int, AlarmEvent]:
        """The alarm events of this round, by position in `take`."""
        events: dict[int, AlarmEvent] = {}
        if count_nonzero(raised) or count_nonzero(cleared):  # a third of ndarray.any()'s cost
            since, peak, count = cols["alarm.since"], cols["alarm.peak"], cols["alarm.readings"]
            for m in np.flatnonzero(raised | cleared).tolist():
                events[m] = AlarmEvent(
                    readings[take[m]].stream,
                    "raised" if raised[m] else "cleared",
                    float(since[m]),
                    float(peak[m]),
                    int(count[m]),
                    None if raised[m] else ("adapted" if shifted is not None and shifted[m] else "normal"),
                )
            self.stats.alarms_raised += int(raised.sum())
        return events

    def _results(
        self,
        readings: list[Reading],
        take: list[int],
        out: list[Outcome | None],
        scored: Scored,
        warming: np.ndarray,
        predictions: np.ndarray,
        alarms: np.ndarray,
        events: dict[int, AlarmEvent],
    ) -> None:
        """One Result per reading of `take` into `out`, from named columns: the engine's and every
        channel's fields (result.results)."""
        forecast, n = self.forecast, len(take)
        taken = [readings[j] for j in take]
        columns: dict[str, Iterable[Any]] = {
            "stream": [r.stream for r in taken],
            "ts": [r.ts for r in taken],
            "anomaly": scored.flags.tolist(),
            "warming_up": warming.tolist(),
            "model": repeat(self.meta.model_id),
            "prediction" if forecast else "output": predictions.tolist(),
            "names": repeat(self.names),
            "alarm": alarms.tolist(),
            **scored.fields,
        }
        if events:
            columns["alarm_event"] = [events.get(m) for m in range(n)]
        extra = [k for k in self.scorer.extra_fields if k in scored.fields]
        if extra:
            columns["extra"] = [dict(zip(extra, row)) for row in zip(*(scored.fields[k] for k in extra))]
        for j, result in zip(take, results(columns)):
            out[j] = result

    def _forecasts(self, y: np.ndarray, ts: np.ndarray, gap: np.ndarray) -> list[dict[str, list[float]]]:
        """Each row's K-step forecast in feature units, with the expected time of each step: `ts + k *
        sample_interval_s`, or `ts + k * gap` (the stream's last gap) without a nominal interval; no
        times when neither is known (a stream's first reading)."""
        k, n_out = self.horizon, len(self.names)
        fc = self.scorer.unscale(y.reshape(len(y), k, n_out))  # [rows, K, outputs]
        interval = self.meta.sample_interval_s
        steps = np.arange(1, k + 1, dtype=np.float64)
        out = []
        for m, rows in enumerate(fc.transpose(0, 2, 1).tolist()):
            d = dict(zip(self.names, rows))
            iv = interval if interval is not None else float(gap[m])
            if np.isfinite(iv) and iv > 0:
                d["ts"] = (ts[m] + steps * iv).tolist()
            out.append(d)
        return out

    def evict_idle(self, older_than_ts: float) -> list[StreamState]:
        """Evict streams whose last reading is older than `older_than_ts` (spilled like any evicted)."""
        rows = [self.table.evict(s) for s in self.table.idle_streams(older_than_ts)]
        self.stats.evicted += len(rows)
        if self.spill is not None:
            self.spill.put(rows)
        return rows

    def reset_stream(self, stream: str) -> bool:
        """Forget a stream (the `reset` command): its next reading starts it fresh, warming up and learning
        its baseline again; its spilled versions are dropped too. False if the engine knew nothing of it."""
        known = stream in self.table
        if known:
            self.table.evict(stream)
        if self.spill is not None:
            known = self.spill.forget(stream) or known
        return known

    def accept_stream(self, stream: str) -> tuple[bool, AlarmEvent | None]:
        """Take the stream's current regime as normal now (the `accept` command): its surprise statistics
        learn again from its next `scoring.baseline` readings (no flags meanwhile), its recurrent state and
        the other channels are kept; a raised alarm clears (the event is returned, reason `accepted`).
        (False, None) if the stream is not in the table."""
        if stream not in self.table:
            return False, None
        slot = self.table.index[stream]
        specs = self.table.column_specs
        was = bool(self.table.columns["alarm.raised"][slot])
        event = None
        if was:
            c = self.table.columns
            event = AlarmEvent(
                stream,
                "cleared",
                float(self.table.last_ts[slot]),
                float(c["alarm.peak"][slot]),
                int(c["alarm.readings"][slot]),
                "accepted",
            )
        for key, column in self.table.columns.items():
            if key.startswith(("surprise.", "alarm.")):
                column[slot] = specs[key].init
        return True, event

    def describe_stream(self, stream: str) -> dict[str, object] | None:
        """What the `inspect` command reports about a stream in the table (None if it is not there)."""
        if stream not in self.table:
            return None
        row = self.table.row(stream)
        c = row.columns
        ready = row.steps >= self.scorer.config.baseline
        return {
            "stream": stream,
            "steps": row.steps,
            "last_ts": row.last_ts,
            "anomalies": row.anomalies,
            "warming_up": row.steps < self.warmup,
            "baseline_ready": bool(ready),
            **self.scorer.describe(c, bool(ready)),
            "alarm": {
                "raised": bool(c["alarm.raised"]),
                "since": float(c["alarm.since"]) if c["alarm.raised"] else None,
                "peak_score": float(c["alarm.peak"]),
                "readings": int(c["alarm.readings"]),
            },
        }

    def swap_model(self, model: StepModel, scoring: ScoringConfig, alarms: AlarmPolicy) -> bool:
        """Serve `model` from now on, keeping every stream's state, if it has the same state signature
        (features, state tensor shapes, output kind and names) as the current one; False otherwise (the
        caller restarts instead). Calibration, scaling, warm-up and scoring settings come from the new."""
        old = self.meta
        new = model.meta
        same = (
            list(new.features) == list(old.features)
            and [tuple(s) for s in model.state_shapes] == [tuple(s) for s in self.model.state_shapes]
            and new.output.kind == old.output.kind
            and list(new.output.names) == list(old.output.names)
        )
        if not same:
            return False
        scorer = Scorer(new, scoring)
        if _layout(scorer.columns) != _layout(self.scorer.columns):
            return False  # other scoring columns (e.g. another number of known states): rows do not fit
        scorer.adopt(self.scorer, self.table.columns)
        self.model, self.meta, self.scorer, self.alarms = model, new, scorer, alarms
        self.warmup = max(new.warmup_steps, 1) if self.forecast else new.warmup_steps
        self.horizon = new.output.steps
        self._offset = np.asarray(new.scaling.offset, np.float64)
        self._inv_scale = 1.0 / np.asarray(new.scaling.scale, np.float64)
        return True


def _slot_order(s: np.ndarray, take: list[int]) -> tuple[np.ndarray, np.ndarray | slice, list[int]]:
    """Slots, rows (as_rows) and readings' positions, in slot order if that makes the rows one slice: results go
    by position, a row's numbers do not depend on its place (tests/unit/test_cpu_paths.py), acquire set recency."""
    rows = as_rows(s)
    if isinstance(rows, slice) or len(s) < 2:
        return s, rows, take
    order = np.argsort(s)
    in_order = as_rows(s[order])
    return (s[order], in_order, [take[k] for k in order.tolist()]) if isinstance(in_order, slice) else (s, rows, take)


def _layout(columns: dict[str, Column]) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    return {k: (tuple(c.shape), np.dtype(c.dtype)) for k, c in columns.items()}
