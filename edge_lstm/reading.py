"""Payload → Reading: decode and validate one MQTT message. Never raises on bad input.

Every rejection carries a specific reason (a short stable code, used as a metric label) and a detail.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Readings stamped before this are certainly a sensor with an unset clock (2000-01-01T00:00:00Z).
MIN_TS = 946_684_800.0
# Units of a numeric `ts` (parse_ts): above MS_ABOVE it is epoch milliseconds, above US_ABOVE epoch
# microseconds. Epoch seconds reach 1e11 only in the year 5138; epoch ms passed 1e11 in 1973, epoch µs
# passed 1e14 in 1973: the ranges of dates after 2000 in the three units never overlap.
MS_ABOVE = 1e11
US_ABOVE = 1e14
_INF = math.inf
F32_MAX = 3.0e38  # beyond this (float32's range) the model would see inf


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x more, once per reading
class Reading:
    stream: str
    ts: float  # event time, epoch seconds
    values: tuple[float, ...]  # in the model's feature order, feature units


@dataclass(frozen=True, slots=True)
class Rejection:
    stream: str
    reason: str  # stable code: too_large, not_utf8, not_json, ... (see REASONS)
    detail: str


REASONS = {
    "too_large": "payload larger than the configured limit",
    "not_utf8": "payload is not valid UTF-8",
    "not_json": "payload is not valid JSON (or nested too deeply)",
    "bad_shape": "payload is neither a JSON object nor a number",
    "missing_feature": "a feature of the model is missing",
    "wrong_length": "'values' does not have one number per feature",
    "not_number": "a value is not a number",
    "not_finite": "a value is NaN or infinite",
    "bad_ts": "'ts' is not epoch seconds (or ms, µs) or ISO-8601, or is before 2000",
    "ts_in_future": "'ts' is further in the future than the allowed clock skew",
    "duplicate": "'ts' equals the stream's last processed ts (a redelivery)",
    "out_of_order": "'ts' is older than the stream's last processed ts",
    "bad_stream": "the topic does not name a valid stream",
    "internal_error": "handling the reading raised (a bug): logged with its error, acknowledged",
}


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


class TimestampError(_Reject, ValueError):
    """A `ts` parse_ts refuses: `reason` is `bad_ts` or `ts_in_future`, `detail` says why."""


_UNIT_HINT = "a numeric ts above 1e11 is epoch ms, above 1e14 µs"


def parse_ts(raw: Any, arrival_ts: float, max_future_s: float = _INF) -> float:
    """A reading's `ts` → epoch seconds. The one timestamp rule of the daemon and of `replay`:

    - absent (None): the arrival time `arrival_ts`;
    - a number: epoch seconds, except that values above 1e11 (`MS_ABOVE`) are epoch milliseconds and
      values above 1e14 (`US_ABOVE`) epoch microseconds (ESP32 and JavaScript clocks count in ms);
      for dates after 2000 the three ranges never overlap;
    - a string: ISO-8601 (`datetime.fromisoformat`), UTC when it has no zone.

    Raises `TimestampError` (reason `bad_ts`) for anything else, for non-finite numbers and for times
    before 2000-01-01, and (reason `ts_in_future`) for a time more than `max_future_s` after
    `arrival_ts`; that detail says which unit the number was read in.
    """
    unit = ""
    if raw is None:
        return arrival_ts
    if _is_number(raw):
        ts, unit = _epoch_number(raw)
    elif isinstance(raw, str):
        ts = _iso_8601(raw)
    else:
        raise TimestampError(
            "bad_ts", f"'ts' must be epoch seconds (ms, µs) or an ISO-8601 string, got {type(raw).__name__}"
        )
    if ts < MIN_TS:
        read_as = f" (read as epoch {unit})" if unit else ""
        raise TimestampError("bad_ts", f"'ts' {str(raw)[:40]!r}{read_as} is before 2000-01-01")
    if ts > arrival_ts + max_future_s:
        ahead = f"'ts' {str(raw)[:40]!r} is {ts - arrival_ts:.6g} s ahead of the clock"
        if unit:
            raise TimestampError("ts_in_future", f"{ahead}: read as epoch {unit} ({_UNIT_HINT})")
        raise TimestampError("ts_in_future", f"{ahead} (an ISO-8601 time without a zone is UTC)")
    return ts


def _epoch_number(raw: Any) -> tuple[float, str]:
    """A numeric `ts` → (epoch seconds, the unit it was read in)."""
    try:
        ts = float(raw)
    except OverflowError:
        raise TimestampError("bad_ts", "'ts' is an integer too large for a timestamp") from None
    if not math.isfinite(ts):
        raise TimestampError("bad_ts", f"'ts' {str(raw)[:40]!r} is not a finite number")
    if ts > US_ABOVE:
        return ts / 1e6, "microseconds"
    if ts > MS_ABOVE:
        return ts / 1e3, "milliseconds"
    return ts, "seconds"


def _iso_8601(raw: str) -> float:
    """An ISO-8601 `ts` → epoch seconds (UTC when it has no zone)."""
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise TimestampError("bad_ts", f"'ts' {raw[:40]!r} is not ISO-8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _reject_constant(name: str) -> Any:
    raise _Reject("not_finite", f"JSON constant {name} is not a finite number")


# One decoder for all messages: `json.loads(..., **hooks)` would build a new JSONDecoder per call,
# which costs more than parsing a reading. parse_int=float: a 5000-digit integer becomes inf (rejected
# as not finite) instead of tripping int-size limits; parse_constant refuses NaN/Infinity tokens.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_int=float)


class FutureGuard:
    """The clock rule for readings ahead of the daemon's clock (docs/operations.md, "Field conditions").

    A Pi without a real-time clock runs behind until NTP syncs, and sensors keep their own clocks, often
    ahead of it. Rejecting every reading more than `max_future_s` ahead of the daemon would darken a
    whole site; accepting them all would let one bogus reading a year ahead block its stream (every
    later reading would be `out_of_order`). So the reference is the stream's own clock:

    - a reading at most `max_future_s` ahead of the daemon's clock is not looked at here;
    - one further ahead is admitted if it is at most `max_future_s` after the stream's newest reading
      (its last processed `ts`, or the last one admitted here): the stream already runs that far ahead;
    - otherwise it is held (rejected `ts_in_future`) until `confirm` consecutive readings agree, each
      newer than the one before and at most `max_future_s` after it; the `confirm`-th is admitted. A
      reading of the stream that is not ahead (`behind`) ends the run: a sensor that sends a bogus
      reading now and then between good ones never moves its stream's clock.

    A single bogus reading is therefore rejected and changes nothing (also after a restart: the
    stream's `ts` never moved); a sensor whose clock is days ahead loses its first `confirm - 1`
    readings, once. Memory: two dictionaries bounded by `max_streams` entries, only for streams ahead.
    """

    confirm = 3

    def __init__(
        self, max_future_s: float, last_ts: Callable[[str], float | None], *, max_streams: int = 10_000
    ) -> None:
        self.max_future_s = max_future_s
        self.last_ts = last_ts  # the stream's last processed ts (None: not in the state table)
        self.max_streams = max_streams
        self.ahead: OrderedDict[str, float] = OrderedDict()  # streams confirmed ahead: newest admitted ts
        self.pending: OrderedDict[str, tuple[float, int]] = OrderedDict()  # (newest held ts, readings agreeing)

    def behind(self, stream: str) -> None:
        """The stream sent a reading that is not ahead of the daemon: a run of held readings ends."""
        if self.pending:  # empty but for streams with held readings: one truth test per reading
            self.pending.pop(stream, None)

    def admit(self, stream: str, ts: float) -> bool:
        tol = self.max_future_s
        ref = self.ahead.get(stream)
        last = self.last_ts(stream)
        if last is not None and (ref is None or last > ref):
            ref = last
        if ref is not None and ts <= ref + tol:
            self._remember(self.ahead, stream, max(ts, ref))
            self.pending.pop(stream, None)
            return True
        held = self.pending.get(stream)
        if held is not None and held[0] < ts <= held[0] + tol:
            if held[1] + 1 >= self.confirm:
                del self.pending[stream]
                self._remember(self.ahead, stream, ts)
                return True
            self._remember(self.pending, stream, (ts, held[1] + 1))
            return False
        self._remember(self.pending, stream, (ts, 1))
        return False

    def _remember(self, d: OrderedDict[str, Any], stream: str, value: Any) -> None:
        d[stream] = value
        d.move_to_end(stream)
        if len(d) > self.max_streams:
            d.popitem(last=False)


class Decoder:
    """Decodes payloads for one model's features. Build once; call per message."""

    def __init__(
        self,
        features: Sequence[str],
        *,
        max_payload_bytes: int = 4096,
        max_future_s: float = 300.0,
        max_stream_id: int = 256,
        future_guard: FutureGuard | None = None,
    ) -> None:
        """`future_guard`: admits readings further ahead than `max_future_s` by the stream's own clock
        (the daemon's rule); None: every such reading is rejected `ts_in_future`."""
        self.future_guard = future_guard
        self.features = tuple(features)
        self.max_payload_bytes = max_payload_bytes
        self.max_future_s = max_future_s
        # Stream ids come from topic levels, which may be 64 KiB long; the state table keeps every id
        # in memory, so a bound keeps `max_streams` meaningful as a memory bound.
        self.max_stream_id = max_stream_id

    def decode(self, stream: str, payload: bytes, arrival_ts: float) -> Reading | Rejection:
        try:
            return self._decode(stream, payload, arrival_ts)
        except _Reject as r:
            return Rejection(stream, r.reason, r.detail)

    def _decode(self, stream: str, payload: bytes, arrival_ts: float) -> Reading:
        if not stream or len(stream) > self.max_stream_id:
            raise _Reject("bad_stream", f"stream id of {len(stream)} characters (1 to {self.max_stream_id} allowed)")
        if len(payload) > self.max_payload_bytes:
            raise _Reject("too_large", f"{len(payload)} bytes > limit {self.max_payload_bytes}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Reject("not_utf8", str(e)) from None
        try:
            # Integers are parsed straight to float: an integer too large for a float becomes inf
            # (rejected as not_finite, never an OverflowError later) and a long run of digits costs
            # linear time instead of hitting int's digit limit (which would read as not_json).
            doc = _JSON.decode(text)
        except _Reject:
            raise
        except (ValueError, RecursionError) as e:
            raise _Reject("not_json", str(e)[:120]) from None
        if isinstance(doc, dict):
            ts = self._ts(stream, doc.get("ts"), arrival_ts)
            return Reading(stream, ts, self._values(doc))
        if _is_number(doc):
            if len(self.features) != 1:
                raise _Reject(
                    "wrong_length",
                    f"a bare number needs a one-feature model, this one has {len(self.features)} features",
                )
            return Reading(stream, arrival_ts, (_finite(doc, self.features[0]),))
        raise _Reject("bad_shape", f"expected a JSON object or number, got {type(doc).__name__}")

    def _values(self, doc: dict[str, Any]) -> tuple[float, ...]:
        if "values" in doc:
            vals = doc["values"]
            if not isinstance(vals, list):
                raise _Reject("wrong_length", f"'values' must be a list, got {type(vals).__name__}")
            if len(vals) != len(self.features):
                raise _Reject(
                    "wrong_length",
                    f"'values' has {len(vals)} items for {len(self.features)} features {list(self.features)}",
                )
        else:
            missing = [f for f in self.features if f not in doc]
            if missing:
                raise _Reject(
                    "missing_feature", f"missing {missing}; expected 'values' or fields {list(self.features)}"
                )
            vals = [doc[f] for f in self.features]
        # Fast path: the parser makes every JSON number a float (parse_int=float) and never yields
        # NaN, so floats within float32 range are valid as they are. Anything else gets the
        # per-value check that names the offending feature.
        if all(type(v) is float for v in vals) and -F32_MAX <= min(vals) and max(vals) <= F32_MAX:
            return tuple(vals)
        return tuple([_finite(v, f) for v, f in zip(vals, self.features)])

    def _ts(self, stream: str, raw: Any, arrival_ts: float) -> float:
        # The common case first: a float in epoch seconds. NaN fails every comparison; `< MS_ABOVE`
        # also keeps inf out (needed: with max_future_s = inf, or an infinite arrival time, the last
        # bound would let it through) and sends milliseconds and microseconds to parse_ts.
        guard = self.future_guard
        if type(raw) is float and MIN_TS <= raw < MS_ABOVE and raw <= arrival_ts + self.max_future_s:
            if guard is not None:
                guard.behind(stream)
            return raw
        if guard is None:
            return parse_ts(raw, arrival_ts, self.max_future_s)
        ts = parse_ts(raw, arrival_ts)  # any unit, no bound: the guard decides below
        if ts <= arrival_ts + self.max_future_s:
            guard.behind(stream)
            return ts
        if guard.admit(stream, ts):
            return ts
        try:
            parse_ts(raw, arrival_ts, self.max_future_s)  # raises ts_in_future, with the unit it read
        except TimestampError as e:
            raise TimestampError(
                e.reason,
                f"{e.detail}; and ahead of the stream's own readings: held until {guard.confirm} readings "
                "in a row confirm the stream's clock",
            ) from None
        return ts  # not reached: parse_ts raised


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any, name: str) -> float:
    if not _is_number(v):
        raise _Reject("not_number", f"{name}: {str(v)[:40]!r} is not a number")
    try:
        f = float(v)
    except OverflowError:
        raise _Reject("not_finite", f"{name}: integer too large") from None
    if not math.isfinite(f):
        raise _Reject("not_finite", f"{name}: {f} is not finite")
    # Beyond float32 range the model would see inf.
    if abs(f) > F32_MAX:
        raise _Reject("not_finite", f"{name}: {f:g} is outside float32 range")
    return f
