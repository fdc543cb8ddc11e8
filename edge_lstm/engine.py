"""The engine: readings in, results out. Pure: no I/O, no clock, no threads.

Readings waiting together are stepped in one model call per *round*; a stream appears at most once per
round, so several readings of one stream are applied in arrival order in successive rounds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .alarm import COLUMNS as ALARM_COLUMNS
from .alarm import AlarmPolicy
from .ports import SpillStore, StepModel
from .reading import Reading, Rejection
from .result import AlarmEvent, Result
from .score import Scorer, ScoringConfig
from .state import Column, StateTable, StreamState
from .timeinputs import time_columns


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
            columns={**self.scorer.columns, **ALARM_COLUMNS},
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
        table = self.table
        n = len(readings)
        out: list[Outcome | None] = [None] * n
        ts = np.fromiter([r.ts for r in readings], np.float64, n)
        slots_get = table.slots.get
        known = [slots_get(r.stream, -1) for r in readings]
        # Event time: a reading not newer than its stream's last one is a duplicate or out of order.
        stale: set[int] = set()
        kidx = [j for j in range(n) if known[j] >= 0]
        if kidx:
            last = table.last_ts[[known[j] for j in kidx]]
            for m in np.flatnonzero(ts[kidx] <= last).tolist():
                j = kidx[m]
                r, prev = readings[j], float(last[m])
                reason = "duplicate" if r.ts == prev else "out_of_order"
                self.stats.rejected[reason] += 1
                out[j] = Rejection(r.stream, reason, f"ts {r.ts:.6f} <= last processed ts {prev:.6f}")
                stale.add(j)
        take = [j for j in range(n) if j not in stale] if stale else list(range(n))
        if not take:
            return out  # type: ignore[return-value]
        spill = self.spill
        s, evicted, n_evicted, fresh = table.acquire_many(
            [readings[j].stream for j in take], keep_evicted=spill is not None or self.max_evicted > 0
        )
        self.stats.evicted += n_evicted
        if spill is not None:
            spill.put(evicted)
            # A returning stream continues from its spilled row (the version before this reading).
            for pos in fresh:
                r = readings[take[pos]]
                row = spill.get(r.stream, r.ts)
                if row is not None:
                    table.put_row(int(s[pos]), row)
                    self.stats.unspilled += 1
        elif evicted:
            self.evicted.extend(evicted)
        else:
            self.stats.evicted_dropped += n_evicted

        values = np.asarray([readings[j].values for j in take], np.float64)
        u = (values - self._offset) * self._inv_scale
        tss = ts[take] if stale else ts
        x = u.astype(np.float32)
        if self.meta.time_inputs:  # the model also sees the reading's time of day / week (timeinputs.py)
            x = np.concatenate([x, time_columns(tss, self.meta.time_inputs).astype(np.float32)], axis=1)
        y, new_states = self.model.step(x, [a[s] for a in table.states])
        self.stats.model_calls += 1
        for a, ns in zip(table.states, new_states):
            a[s] = ns

        steps = table.steps[s]
        cols = table.gather(s)  # copies, gathered when first used; scattered back below
        if self.forecast:
            predicted = table.prediction[s]
            # The next reading's prediction is the forecast's first step (the first len(names) columns).
            predictions = self.scorer.unscale(y if self.horizon == 1 else y[:, : len(self.names)])
            table.prediction[s] = predictions
        else:
            predicted = None
            predictions = y.astype(np.float64)
        gap = tss - table.last_ts[s]  # +inf for a stream's first reading (last_ts starts at -inf)
        scored = self.scorer.score(cols, values, u, y, predicted, steps, self.warmup, gap)
        raised, cleared = self.alarms.update(cols, scored.flags, scored.scores, tss, scored.likelihood)
        cols.scatter()
        flags = scored.flags
        table.steps[s] = steps + 1
        table.anomalies[s] += flags
        table.last_ts[s] = tss
        self.stats.results += len(take)
        self.stats.anomalies += int(flags.sum())

        events: dict[int, AlarmEvent] = {}
        if raised.any() or cleared.any():
            since, peak, count = cols["alarm.since"], cols["alarm.peak"], cols["alarm.readings"]
            for m in np.flatnonzero(raised | cleared).tolist():
                events[m] = AlarmEvent(
                    readings[take[m]].stream,
                    "raised" if raised[m] else "cleared",
                    float(since[m]),
                    float(peak[m]),
                    int(count[m]),
                )
            self.stats.alarms_raised += int(raised.sum())
        model_id, names, forecast = self.meta.model_id, self.names, self.forecast
        ready = scored.ready
        likelihood = [v if r else None for v, r in zip(scored.likelihood.tolist(), ready.tolist())]
        deviation = [v if r else None for v, r in zip(scored.deviation.tolist(), ready.tolist())]
        thresholds = scored.thresholds.tolist() if scored.thresholds is not None else [None] * len(take)
        dev_thresholds = scored.deviation_threshold.tolist()
        none = [None] * len(take)
        biases = none if scored.bias is None else scored.bias.tolist()
        bias_thresholds = none if scored.bias_threshold is None else scored.bias_threshold.tolist()
        rows = zip(
            take,
            scored.scores.tolist(),
            flags.tolist(),
            scored.warming.tolist(),
            predictions.tolist(),
            thresholds,
            likelihood,
            deviation,
            dev_thresholds,
            cols["alarm.raised"].tolist(),
            biases,
            bias_thresholds,
        )
        for m, (j, score, flag, warm, pred, thr, like, dev, dev_thr, alarm, b, b_thr) in enumerate(rows):
            r = readings[j]
            out[j] = Result(
                r.stream,
                r.ts,
                score,
                flag,
                thr,
                warm,
                model_id,
                pred if forecast else None,
                None if forecast else pred,
                names,
                like,
                alarm,
                events.get(m) if events else None,
                dev,
                dev_thr if dev is not None else None,
                bias=b if dev is not None else None,
                bias_threshold=b_thr if dev is not None else None,
            )
        if scored.stuck.any():
            features = self.meta.features
            for m in np.flatnonzero(scored.stuck.any(axis=1)).tolist():
                out[take[m]].stuck = tuple(features[i] for i in np.flatnonzero(scored.stuck[m]).tolist())  # type: ignore[union-attr]
        if self.horizon > 1:
            for j, fc in zip(take, self._forecasts(y, tss, gap)):
                out[j].forecast = fc  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

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
        """Evict streams whose last reading is older than the given event time (spilled if a spill
        store is attached, like streams evicted from a full table)."""
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
            "deviation": float(self.scorer.baseline.current(c)) if ready else None,
            "deviation_threshold": float(c["dev.h"]),
            "likelihood": float(self.scorer.baseline.likelihood(self.scorer.baseline.current(c), c)) if ready else None,
            "bias": float(self.scorer.bias.value(c)) if ready and self.scorer.bias is not None else None,
            "bias_threshold": float(c["bias.h"] * self.scorer.bias_scale) if self.scorer.bias is not None else None,
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
        if not scorer.baseline.same_states(self.scorer.baseline) and "dev.ek" in self.table.columns:
            # Distances to the old model's known states mean nothing for the new ones: start them far.
            self.table.columns["dev.ek"][:] = scorer.columns["dev.ek"].init
        self.model, self.meta, self.scorer, self.alarms = model, new, scorer, alarms
        self.warmup = max(new.warmup_steps, 1) if self.forecast else new.warmup_steps
        self.horizon = new.output.steps
        self._offset = np.asarray(new.scaling.offset, np.float64)
        self._inv_scale = 1.0 / np.asarray(new.scaling.scale, np.float64)
        return True


def _layout(columns: dict[str, Column]) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    return {k: (tuple(c.shape), np.dtype(c.dtype)) for k, c in columns.items()}
