"""Result → JSON payload for `edge-lstm/scores/{stream}` (README, "MQTT topics and payloads")."""

from __future__ import annotations

import json
import math
from math import isfinite
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring  # C-accelerated, returns the quoted JSON string


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

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "stream": self.stream,
            "ts": self.ts,
            "score": _finite_or_none(self.score),
            "anomaly": self.anomaly,
            "threshold": self.threshold,
            "warming_up": self.warming_up,
            "model": self.model,
        }
        if self.prediction is not None:
            d["prediction"] = {k: _finite_or_none(v) for k, v in zip(self.names, self.prediction)}
        if self.output is not None:
            d["output"] = {k: _finite_or_none(v) for k, v in zip(self.names, self.output)}
        return d


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _num(x: float | None) -> str:
    # float.__repr__ is exactly what json.dumps writes for a finite float; JSON has no NaN/Infinity.
    return repr(x) if x is not None and math.isfinite(x) else "null"


@lru_cache(maxsize=64)
def _keys(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(encode_basestring(n) + ":" for n in names)


@lru_cache(maxsize=64)
def _model_json(name: str, version: str) -> str:
    return json.dumps({"name": name, "version": version}, separators=(",", ":"))


def encode(r: Result) -> bytes:
    """The result as compact JSON: equal to `json.dumps(r.to_dict())`, built without the generic
    encoder because this runs once per reading on the hot path (see bench/)."""
    if r.prediction is not None:
        key, values = "prediction", r.prediction
    else:
        key, values = "output", r.output or []
    # ts (a validated reading) and threshold (validated metadata) are finite; model outputs may not be.
    num = repr if isfinite(r.score) and all(map(isfinite, values)) else _num
    body = ",".join([k + num(v) for k, v in zip(_keys(r.names), values)])
    threshold = "null" if r.threshold is None else repr(r.threshold)
    return (
        f'{{"stream":{encode_basestring(r.stream)},"ts":{r.ts!r},"score":{num(r.score)},'
        f'"anomaly":{"true" if r.anomaly else "false"},"threshold":{threshold},'
        f'"warming_up":{"true" if r.warming_up else "false"},'
        f'"model":{_model_json(r.model["name"], r.model["version"])},"{key}":{{{body}}}}}'
    ).encode()
