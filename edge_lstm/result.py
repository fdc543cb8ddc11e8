"""Result → JSON payload for `edge-lstm/scores/{stream}`, alarm events → `edge-lstm/alarms/{stream}`,
rejections → `mqtt.errors_topic` (README, "MQTT topics and payloads")."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from functools import lru_cache
from itertools import repeat
from json.encoder import encode_basestring  # C-accelerated, returns the quoted JSON string
from math import isfinite
from typing import Any

from .hints import hint
from .reading import Rejection


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A change of a stream's alarm state (alarm.py), published retained on its alarm topic."""

    stream: str
    state: str  # "raised" | "cleared"
    since: float  # event time of the change
    peak_score: float  # highest score of the episode (so far, for "raised")
    readings: int  # readings in the episode (so far, for "raised")
    # "cleared" only: "normal" (back to the stream's old normal), "adapted" (its statistics learned a new
    # level: docs/scoring.md, "Alarms"), "accepted" (the accept command)
    reason: str | None = None

    def to_dict(self, model: dict[str, str]) -> dict[str, object]:
        return {
            "stream": self.stream,
            "state": self.state,
            **({"reason": self.reason} if self.reason is not None else {}),
            "since": self.since,
            "peak_score": rounded(self.peak_score),
            "readings": self.readings,
            "model": model,
        }


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x more, once per reading
class Result:
    stream: str
    ts: float
    score: float
    anomaly: bool
    threshold: float | None
    warming_up: bool
    model: dict[str, str]
    prediction: list[float] | None = None  # forecast models: next reading, feature units
    output: list[float] | None = None  # score models: the model's outputs as they are
    names: tuple[str, ...] = ()  # output column names (forecast: feature names)
    likelihood: float | None = None  # anomaly likelihood in [0, 1] (docs/scoring.md); None while unknown
    surprise: float | None = None  # -log10(1 - likelihood), computed so that it never saturates
    alarm: bool = False  # the stream's alarm state after this reading
    alarm_event: AlarmEvent | None = None  # set when this reading changed the alarm state
    deviation: float | None = None  # smoothed deviation from the stream's normal operation (docs/scoring.md)
    deviation_threshold: float | None = None
    # Multi-step forecast models (output.horizon K > 1): each output's K future values, feature units,
    # and "ts": their expected times (absent when unknown).
    forecast: dict[str, list[float]] | None = None
    # Features whose sensor repeats one value for far longer than it did in the stream's baseline
    # (scoring/channels/stuck.py); present in the payload only when not empty.
    stuck: tuple[str, ...] = ()
    # Forecast models: the persistent forecast error and the stream's threshold of it (scoring/channels/bias.py); None
    # while the stream is still learning its baseline, and for score models.
    bias: float | None = None
    bias_threshold: float | None = None
    # Fields of scoring channels that Result does not name (docs/architecture.md, "Adding a channel"):
    # published after the named ones, through json.dumps.
    extra: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "stream": self.stream,
            "ts": self.ts,
            "score": rounded(self.score),
            "anomaly": self.anomaly,
            "threshold": rounded(self.threshold),
            "deviation": rounded(self.deviation),
            "deviation_threshold": rounded(self.deviation_threshold),
            "bias": rounded(self.bias),
            "bias_threshold": rounded(self.bias_threshold),
            "likelihood": rounded(self.likelihood),
            "surprise": rounded(self.surprise),
            "alarm": self.alarm,
            "warming_up": self.warming_up,
            "model": self.model,
        }
        if self.prediction is not None:
            d["prediction"] = {k: rounded(v) for k, v in zip(self.names, self.prediction)}
        if self.output is not None:
            d["output"] = {k: rounded(v) for k, v in zip(self.names, self.output)}
        if self.forecast is not None:
            # Its "ts" are times: kept whole, as the result's own ts.
            d["forecast"] = {
                k: [_finite_or_none(v) if k == "ts" else rounded(v) for v in vals] for k, vals in self.forecast.items()
            }
        if self.stuck:
            d["stuck"] = list(self.stuck)
        if self.extra:
            d.update(self.extra)
        return d


# Result's fields in order, with their defaults (MISSING: none).
_FIELDS = tuple((f.name, f.default) for f in fields(Result))
FIELD_NAMES = frozenset(name for name, _ in _FIELDS)


def results(columns: Mapping[str, Iterable[Any]]) -> Iterator[Result]:
    """Results built from named columns, one iterable per Result field (one value per result, by field
    name; a field without a column takes its default). Per result this is one positional call: building
    each Result by keyword from a dict cost ~2.3 µs more per reading."""
    args = []
    for name, default in _FIELDS:
        column = columns.get(name)
        if column is None:
            if default is MISSING:
                raise TypeError(f"results(): no column for the required field {name!r}")
            column = repeat(default)
        args.append(column)
    return (Result(*row) for row in zip(*args))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# Published numbers carry this many significant digits (README, "MQTT topics and payloads"): scores and
# thresholds are statistics, predictions a model's guess; digits beyond the sixth are noise on the wire
# and in dashboards. Times (ts, since, a forecast's ts) are published whole.
SIGNIFICANT_DIGITS = 6


def rounded(x: float | None) -> float | None:
    """`x` to SIGNIFICANT_DIGITS significant digits; None for None, NaN and infinities (not JSON)."""
    return float(f"{x:.6g}") if x is not None and math.isfinite(x) else None


def _num(x: float | None) -> str:
    # The template's own "%.6g" (SIGNIFICANT_DIGITS); JSON has no NaN/Infinity.
    return "null" if x is None or not math.isfinite(x) else f"{x:.6g}"


_BOOL = ("false", "true")


@lru_cache(maxsize=64)
def _template(key: str, names: tuple[str, ...], model: str, version: str, num: str, ts: str) -> str:
    """The payload as one %-format string: a single C-level formatting call per result. `num` formats
    the numbers ("%.6g": SIGNIFICANT_DIGITS, or "%s" for preformatted ones), `ts` the time."""

    def lit(text: str) -> str:
        return text.replace("%", "%%")

    fields = ",".join(lit(encode_basestring(n)) + ":" + num for n in names)
    model_json = lit(json.dumps({"name": model, "version": version}, separators=(",", ":")))
    return (
        '{"stream":%s,"ts":' + ts + ',"score":' + num + ',"anomaly":%s,"threshold":%s,'
        '"deviation":%s,"deviation_threshold":%s,"bias":%s,"bias_threshold":%s,"likelihood":%s,"surprise":%s,"alarm":%s,"warming_up":%s,"model":'
        + model_json
        + ',"'
        + key
        + '":{'
        + fields
        + "}}"
    )


def encode(r: Result) -> bytes:
    """The result as compact JSON, numbers to SIGNIFICANT_DIGITS: the same values as
    `json.dumps(r.to_dict())` (written "%.6g": `2` where json.dumps writes `2.0`), built from a cached
    template because this runs once per reading on the hot path (see bench/). Multi-step forecasts (rarer,
    and bigger), results naming stuck sensors (rare) and results with fields of channels Result does not
    name go through json.dumps."""
    if r.forecast is not None or r.stuck or r.extra:
        return json.dumps(r.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
    if r.prediction is not None:
        key, values = "prediction", r.prediction
    else:
        key, values = "output", r.output or []
    model = r.model
    # "%.6g" is SIGNIFICANT_DIGITS in one C-level call per number; to_dict() rounds to the same values.
    threshold = "null" if r.threshold is None else f"{r.threshold:.6g}"
    likelihood = "null" if r.likelihood is None else f"{r.likelihood:.6g}"
    surprise = _num(r.surprise)
    deviation = _num(r.deviation)
    dev_threshold = "null" if r.deviation_threshold is None else f"{r.deviation_threshold:.6g}"
    bias = _num(r.bias)
    bias_threshold = "null" if r.bias_threshold is None else f"{r.bias_threshold:.6g}"
    if isfinite(r.ts) and isfinite(r.score) and all(map(isfinite, values)):
        # float.__repr__ (%r) is exactly what json.dumps writes for a finite float: ts is published whole.
        t = _template(key, r.names, model["name"], model["version"], "%.6g", "%r")
        return (
            t
            % (
                encode_basestring(r.stream),
                r.ts,
                r.score,
                _BOOL[r.anomaly],
                threshold,
                deviation,
                dev_threshold,
                bias,
                bias_threshold,
                likelihood,
                surprise,
                _BOOL[r.alarm],
                _BOOL[r.warming_up],
                *values,
            )
        ).encode()
    # JSON has no NaN/Infinity: such numbers become null.
    t = _template(key, r.names, model["name"], model["version"], "%s", "%s")
    return (
        t
        % (
            encode_basestring(r.stream),
            repr(r.ts) if isfinite(r.ts) else "null",
            _num(r.score),
            _BOOL[r.anomaly],
            threshold,
            deviation,
            dev_threshold,
            bias,
            bias_threshold,
            likelihood,
            surprise,
            _BOOL[r.alarm],
            _BOOL[r.warming_up],
            *map(_num, values),
        )
    ).encode()


def encode_rejection(r: Rejection, topic: str) -> bytes:
    """The payload published on `mqtt.errors_topic` for a rejected reading."""
    doc = {"stream": r.stream, "reason": r.reason, "detail": r.detail, "topic": topic, "hint": hint(r.reason)}
    return json.dumps(doc).encode()


def encode_alarm(e: AlarmEvent, model: dict[str, str]) -> bytes:
    """The retained payload of `edge-lstm/alarms/{stream}` (rare: plain json.dumps)."""
    return json.dumps(e.to_dict(model), separators=(",", ":"), ensure_ascii=False).encode()
