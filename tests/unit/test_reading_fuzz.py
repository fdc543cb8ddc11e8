"""Hostile and broken payloads: the decoder rejects each with its specific reason and never raises;
valid payloads decode to exactly their values; and garbage interleaved with valid traffic through
Decoder + Engine changes neither the valid readings' results nor any stream's state.
"""

from __future__ import annotations

import json
import math
import random
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.models import make_step_model
from support.outcomes import all_scored, present

from edge_lstm.engine import Engine
from edge_lstm.onnx_model import OnnxStepModel, load_model
from edge_lstm.reading import MIN_TS, REASONS, Decoder, Reading, Rejection
from edge_lstm.result import Result

FEATURES = ("a", "b", "c")
NOW = 1_750_000_000.0  # arrival time of every message in these tests
MAX_FUTURE = 300.0
F32_LIMIT = 3.0e38  # the decoder's bound: beyond it the model would see inf
DEC = Decoder(FEATURES)
BIG = Decoder(FEATURES, max_payload_bytes=10_000_000)  # to reach the parser with huge payloads
ONE = Decoder(("a",))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def check(out: Reading | Rejection, decoder: Decoder = DEC, stream: str = "s") -> None:
    """What holds for any payload at all: a Reading that is valid, or a Rejection from REASONS."""
    assert isinstance(out, (Reading, Rejection)), out
    assert out.stream == stream
    if isinstance(out, Rejection):
        assert out.reason in REASONS
        assert out.reason not in ("duplicate", "out_of_order", "bad_stream")  # the engine's, the daemon's
        assert isinstance(out.detail, str) and len(out.detail) <= 200 + 4 * len(repr(decoder.features))
        out.detail.encode("utf-8")  # loggable and publishable as it is (no lone surrogates)
    else:
        assert len(out.values) == len(decoder.features)
        for v in out.values:
            assert type(v) is float and math.isfinite(v) and abs(v) <= F32_LIMIT
        assert type(out.ts) is float and MIN_TS <= out.ts <= NOW + decoder.max_future_s


def reason(payload: bytes, decoder: Decoder = DEC) -> str:
    out = decoder.decode("s", payload, NOW)
    check(out, decoder)
    assert isinstance(out, Rejection), f"{payload[:80]!r} was accepted: {out}"
    return out.reason


# -- strategies -------------------------------------------------------------------------------------

VALUE = st.one_of(
    st.floats(min_value=-F32_LIMIT, max_value=F32_LIMIT, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from([0, -0.0, 5e-324, -5e-324, F32_LIMIT, -F32_LIMIT, 2**53 + 1]),
)
VALUES = st.tuples(VALUE, VALUE, VALUE)
TS_US = st.integers(min_value=int(MIN_TS) * 10**6, max_value=int(NOW + MAX_FUTURE) * 10**6)
OFFSET_MIN = st.integers(min_value=-(14 * 60), max_value=14 * 60)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[Any, float]:
    """A valid `ts` field (or none at all) and the epoch seconds it must decode to."""
    kind = draw(st.sampled_from(["absent", "null", "float", "int", "iso_utc", "iso_z", "iso_naive", "iso_offset"]))
    if kind in ("absent", "null"):
        return (None if kind == "null" else ...), NOW
    us = draw(TS_US)
    exact = us / 10**6
    if kind == "float":
        return exact, exact
    if kind == "int":
        return us // 10**6, float(us // 10**6)
    dt = EPOCH + timedelta(microseconds=us)
    if kind == "iso_utc":
        return dt.isoformat(), exact
    if kind == "iso_z":
        return dt.isoformat().replace("+00:00", "Z"), exact
    if kind == "iso_naive":
        return dt.replace(tzinfo=None).isoformat(), exact
    tz = timezone(timedelta(minutes=draw(OFFSET_MIN)))
    return dt.astimezone(tz).isoformat(), exact


# A valid payload's document, the values and the timestamp it must decode to.
Doc = tuple[dict[str, Any], tuple[float, ...], float]


@st.composite
def valid_docs(draw: st.DrawFn, values: st.SearchStrategy[tuple[Any, ...]] = VALUES) -> Doc:
    vals = draw(values)
    ts, expected_ts = draw(timestamps())
    if draw(st.booleans()):
        items = list(zip(FEATURES, vals))
    else:
        items = [("values", list(vals))]
    items += draw(
        st.lists(
            st.tuples(
                st.sampled_from(["unit", "fw", "seq", "x"]), st.one_of(st.text(max_size=10), st.integers(), st.none())
            ),
            max_size=3,
        )
    )
    if ts is not ...:
        items.append(("ts", ts))
    items = draw(st.permutations(items))
    return dict(items), tuple(float(v) for v in vals), expected_ts


JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from([*FEATURES, "values", "ts"]), st.text(max_size=5)), kids, max_size=6),
    ),
    max_leaves=30,
)
NOT_A_NUMBER = st.one_of(
    st.booleans(),
    st.none(),
    st.text(max_size=20),
    st.lists(JSON_LEAF, max_size=4),
    st.dictionaries(st.text(max_size=3), JSON_LEAF, max_size=3),
    st.sampled_from(["1.5", "NaN", "", "0x10", [1.0], [[[]]], {"v": 1}]),
)


# -- valid payloads ---------------------------------------------------------------------------------


@given(valid_docs())
def test_valid_payloads_decode_to_exactly_their_values(case: Doc) -> None:
    doc, values, ts = case
    out = DEC.decode("s", dumps(doc), NOW)
    check(out)
    assert out == Reading("s", ts, values)


@given(VALUE)
def test_bare_number_for_a_one_feature_model(v: Any) -> None:
    assert ONE.decode("s", dumps(v), NOW) == Reading("s", NOW, (float(v),))
    assert reason(dumps(v)) == "wrong_length"  # a three-feature model needs named values


# -- random, mutated and arbitrary input: never an exception -----------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=6000))
@example(b"")
@example(b"\x00")
@example(b"\xef\xbb\xbf{}")  # BOM
def test_random_bytes(payload: bytes) -> None:
    out = DEC.decode("s", payload, NOW)
    check(out)
    if len(payload) > DEC.max_payload_bytes:
        assert isinstance(out, Rejection) and out.reason == "too_large"


@settings(max_examples=300)
@given(JSON)
def test_arbitrary_json_documents(doc: Any) -> None:
    check(DEC.decode("s", dumps(doc), NOW))
    check(ONE.decode("s", dumps(doc), NOW), ONE)


@settings(max_examples=300)
@given(
    valid_docs(),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]),
            st.integers(0, 10_000),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_mutated_valid_payloads(case: Doc, edits: list[tuple[str, int, int]]) -> None:
    p = bytearray(dumps(case[0]))
    for op, pos, byte in edits:
        pos %= len(p) + 1
        if op == "flip" and pos < len(p):
            p[pos] ^= 1 << (byte % 8)
        elif op == "insert":
            p[pos:pos] = bytes([byte])
        elif op == "delete":
            del p[pos : pos + 1 + byte % 4]
        elif op == "truncate":
            del p[pos:]
        elif op == "dup":
            p[pos:pos] = p[pos : pos + byte % 16]
    check(DEC.decode("s", bytes(p), NOW))


# -- each kind of hostile input: its specific reason -------------------------------------------------

BAD_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
]


@given(valid_docs(), st.sampled_from(BAD_UTF8), st.integers(0, 10_000))
def test_invalid_utf8(case: Doc, bad: bytes, pos: int) -> None:
    p = dumps(case[0])  # ASCII (json escapes non-ASCII), so the bad sequence stays bad wherever it goes
    pos %= len(p) + 1
    assert reason(p[:pos] + bad + p[pos:]) == "not_utf8"


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b',"b":1,"c":2}',
        b'{"values":[1,2,' + b"{" * 50_000 + b"}",
    ],
)
def test_deeply_nested_json(payload: bytes) -> None:
    assert reason(payload, BIG) == "not_json"
    assert reason(payload) == "too_large"  # with the default limit it never reaches the parser


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", '{"k":']))
def test_nesting_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + ("1" if opener != "[" else "") + closer * depth
    top = reason(inner.encode(), BIG)
    in_value = reason(f'{{"a":{inner},"b":1,"c":2}}'.encode(), BIG)
    shallow = "bad_shape" if opener == "[" else "missing_feature"  # a list, or an object without a, b, c
    if depth <= 100:
        assert (top, in_value) == (shallow, "not_number")
    elif depth > sys.getrecursionlimit():
        assert (top, in_value) == ("not_json", "not_json")
    else:  # between: depends on how deep the caller's stack already is; either way a clean rejection
        assert top in (shallow, "not_json") and in_value in ("not_number", "not_json")


HUGE = [
    "1e400",
    "-1e400",
    "1e309",
    "1" + "0" * 309,
    "-" + "9" * 400,
    "1" + "0" * 5000,
    "9" * 100_000,
    "1.7976931348623159e308",
    "3.1e38",
    "-3.4028235e38",
    "1e39",
    "123456789e300",
]


@pytest.mark.parametrize("num", HUGE)
def test_huge_numbers(num: str) -> None:
    assert reason(f'{{"a":{num},"b":1,"c":2}}'.encode(), BIG) == "not_finite"
    assert reason(f'{{"values":[1,{num},2]}}'.encode(), BIG) == "not_finite"
    assert reason(num.encode(), ONE if len(num) < 4096 else Decoder(("a",), max_payload_bytes=10**6)) == "not_finite"
    # As a timestamp: not a finite number (bad_ts), or finite and absurdly far ahead (ts_in_future).
    ts_reason = reason(f'{{"a":1,"b":1,"c":2,"ts":{num}}}'.encode(), BIG)
    if num.startswith("-"):
        assert ts_reason == "bad_ts"
    elif math.isinf(float(num)):
        assert ts_reason == "bad_ts"
    else:
        assert ts_reason == "ts_in_future"


@given(
    st.floats(min_value=F32_LIMIT, exclude_min=True, allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.integers(0, 2),
)
def test_beyond_float32_range(v: float, negative: bool, i: int) -> None:
    vals: list[float] = [1.0, 2.0, 3.0]
    vals[i] = -v if negative else v
    assert reason(dumps({"values": vals})) == "not_finite"
    assert reason(dumps(dict(zip(FEATURES, vals)))) == "not_finite"


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "template",
    [
        '{{"a":{c},"b":1,"c":2}}',
        '{{"a":1,"b":1,"c":{c}}}',
        '{{"values":[{c},1,2]}}',
        '{{"values":[1,2,{c}]}}',
        '{{"a":1,"b":1,"c":2,"ts":{c}}}',
        '{{"a":1,"b":1,"c":2,"other":[{c}]}}',
        "{c}",
        "[{c}]",
    ],
)
def test_nan_and_infinity_literals(const: str, template: str) -> None:
    assert reason(template.format(c=const).encode()) == "not_finite"
    assert reason(template.format(c=const).encode(), ONE) == "not_finite"


@given(st.lists(VALUE, max_size=12).filter(lambda v: len(v) != len(FEATURES)), timestamps())
def test_wrong_number_of_values(vals: list[Any], ts: tuple[Any, ...]) -> None:
    doc: dict[str, Any] = {"values": vals}
    if ts[0] is not ...:
        doc["ts"] = ts[0]
    assert reason(dumps(doc)) == "wrong_length"


@given(st.one_of(JSON_LEAF, st.dictionaries(st.text(max_size=3), JSON_LEAF, max_size=3)))
def test_values_not_a_list(v: Any) -> None:
    assert reason(dumps({"values": v})) == "wrong_length"


@given(VALUES, st.integers(0, 2), NOT_A_NUMBER, st.booleans())
def test_value_of_the_wrong_type(vals: tuple[Any, ...], i: int, bad: Any, as_list: bool) -> None:
    v = list(vals)
    v[i] = bad
    doc = {"values": v} if as_list else dict(zip(FEATURES, v))
    assert reason(dumps(doc)) == "not_number"


@given(VALUES, st.sets(st.sampled_from(FEATURES), min_size=1))
def test_missing_feature(vals: tuple[Any, ...], drop: set[str]) -> None:
    doc = {f: v for f, v in zip(FEATURES, vals) if f not in drop}
    assert reason(dumps(doc)) == "missing_feature"


@given(st.one_of(st.text(max_size=30), st.booleans(), st.none(), st.lists(JSON, max_size=4)))
def test_not_an_object_or_number(doc: Any) -> None:
    assert reason(dumps(doc)) == "bad_shape"
    assert reason(dumps(doc), ONE) == "bad_shape"


@given(valid_docs(), st.integers(min_value=64, max_value=20_000), st.integers(min_value=1, max_value=5000))
def test_oversized_payloads(case: Doc, limit: int, excess: int) -> None:
    dec = Decoder(FEATURES, max_payload_bytes=limit)
    body = dumps(case[0])
    if len(body) > limit:
        assert reason(body, dec) == "too_large"
        return
    padded = body + b" " * (limit - len(body))  # exactly at the limit: accepted
    assert dec.decode("s", padded, NOW) == Reading("s", case[2], case[1])
    assert reason(padded + b" " * excess, dec) == "too_large"
    assert reason(b"\xff" * (limit + excess), dec) == "too_large"  # checked before anything else


def with_ts(ts: Any) -> bytes:
    return dumps({"a": 1.0, "b": 2.0, "c": 3.0, "ts": ts})


@given(
    st.one_of(
        st.floats(max_value=MIN_TS, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.integers(max_value=int(MIN_TS) - 1),
    )
)
@example(-1)
@example(0)
@example(-1e308)
@example(MIN_TS - 1e-6)
def test_ts_before_2000(ts: float) -> None:
    assert reason(with_ts(ts)) == "bad_ts"


def documented_seconds(ts: float) -> float:
    """README's rule for a numeric ts: above 1e11 epoch ms, above 1e14 epoch µs, else seconds."""
    return ts / 1e6 if ts > 1e14 else ts / 1e3 if ts > 1e11 else ts


@given(
    st.one_of(
        st.floats(min_value=NOW + MAX_FUTURE, exclude_min=True, allow_nan=False, allow_infinity=False),
        st.integers(min_value=int(NOW + MAX_FUTURE) + 1, max_value=10**300),
    )
)
@example(1e30)
@example(NOW + MAX_FUTURE + 0.001)
@example(253402300799)  # 9999-12-31 in seconds, but above 1e11: read as ms (1978), bad_ts
@example(NOW * 1000)  # milliseconds: accepted (tests/unit/test_timestamps.py)
@example((NOW + 2 * MAX_FUTURE) * 1000)  # milliseconds, still ahead
def test_ts_in_future(ts: float) -> None:
    seconds = documented_seconds(float(ts))
    if seconds > NOW + MAX_FUTURE:
        assert reason(with_ts(ts)) == "ts_in_future"
    elif seconds < MIN_TS:  # e.g. 9999-12-31 in seconds: 1978 in milliseconds
        assert reason(with_ts(ts)) == "bad_ts"
    else:
        out = DEC.decode("s", with_ts(ts), NOW)
        assert isinstance(out, Reading) and out.ts == seconds


def not_iso(s: str) -> bool:
    try:
        datetime.fromisoformat(s)
    except ValueError:
        return True
    return False


BAD_ISO = [
    "",
    " ",
    "yesterday",
    "now",
    "2024-13-01",
    "2024-02-30T00:00:00",
    "2024-01-01T25:00",
    "2024-01-01T00:00:00+25:00",
    "2024-01-01T00:00:00ZZ",
    "1.7e9",
    "1750000000",
    "T12:00",
    "2024-01-01 00:00:00 UTC",
    "\x00",
    "\ud800",
    "２０２４-01-01",
    "2024-01-01T00:00:00" + "0" * 5000,
]


@given(st.one_of(st.sampled_from(BAD_ISO), st.text(max_size=40).filter(not_iso)))
def test_ts_bad_strings(ts: str) -> None:
    assert reason(with_ts(ts), BIG) == "bad_ts"


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("1999-12-31T23:59:59Z", "bad_ts"),
        ("1970-01-01T00:00:00", "bad_ts"),
        ("0001-01-01T00:00:00+23:59", "bad_ts"),
        ("9999-12-31T23:59:59.999999-23:59", "ts_in_future"),
        ("2100-01-01", "ts_in_future"),
    ],
)
def test_ts_absurd_dates(ts: str, expected: str) -> None:
    assert reason(with_ts(ts)) == expected


@given(
    st.one_of(
        st.booleans(), st.lists(JSON_LEAF, max_size=3), st.dictionaries(st.text(max_size=3), JSON_LEAF, max_size=3)
    )
)
def test_ts_of_the_wrong_type(ts: Any) -> None:
    assert reason(with_ts(ts)) == "bad_ts"


# -- interleaving: garbage changes nothing -----------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxStepModel:
    return load_model(make_step_model(tmp_path_factory.mktemp("model") / "m.onnx", hidden=8, warmup_steps=2))


GARBAGE: list[tuple[bytes, str]] = [
    (b"\xff\xfe", "not_utf8"),
    (b"{", "not_json"),
    (b"[" * 5000, "too_large"),
    (b"[" * 3000, "not_json"),
    (b'"hello"', "bad_shape"),
    (b"null", "bad_shape"),
    (b"42", "wrong_length"),
    (b'{"a":1,"b":2}', "missing_feature"),
    (b'{"values":[1,2]}', "wrong_length"),
    (b'{"a":true,"b":2,"c":3}', "not_number"),
    (b'{"a":"1","b":2,"c":3}', "not_number"),
    (b'{"a":NaN,"b":2,"c":3}', "not_finite"),
    (b'{"a":1e400,"b":2,"c":3}', "not_finite"),
    (b'{"a":1,"b":2,"c":3,"ts":-5}', "bad_ts"),
    (b'{"a":1,"b":2,"c":3,"ts":"soon"}', "bad_ts"),
    (b'{"a":1,"b":2,"c":3,"ts":1e30}', "ts_in_future"),
    (b'{"a":1,"b":2,"c":3,"ts":1' + b"0" * 400 + b"}", "bad_ts"),
]


def snapshot(engine: Engine) -> tuple[object, ...]:
    """Every row of the table, bit for bit, in LRU order."""
    t = engine.table
    return tuple(
        (
            s,
            tuple(a[slot].tobytes() for a in t.states),
            t.last_ts[slot].item(),
            t.steps[slot].item(),
            t.anomalies[slot].item(),
            t.prediction[slot].tobytes(),
        )
        for s, slot in t.slots.items()
    )


def run(engine: Engine, items: list[tuple[str, bytes]], sizes: list[int]) -> list[Result | Rejection]:
    outs: list[Result | Rejection] = []
    i, k = 0, 0
    while i < len(items):
        n = sizes[k % len(sizes)]
        k += 1
        chunk = items[i : i + n]
        i += n
        decoded = [DEC.decode(s, p, NOW) for s, p in chunk]
        before = snapshot(engine)
        res = engine.process(decoded)
        if all(isinstance(r, Rejection) for r in res):
            assert snapshot(engine) == before  # rejected inputs touch nothing, not even LRU order
        outs += res
    return outs


def traffic(rng: random.Random) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes, str | None]]]:
    """Valid payloads for several streams, and the same traffic with garbage, redeliveries and
    out-of-order readings mixed in (with the reason each extra input must be rejected for, None for
    valid ones)."""
    streams = [f"dev-{k}" for k in range(rng.randint(2, 6))] + ["a/b+#", "ünï\x00"]
    per_stream: dict[str, list[tuple[float, bytes]]] = {s: [] for s in streams}
    for s in streams:
        us = int(NOW - 20_000) * 10**6 + rng.randrange(10**6)
        for _ in range(rng.randint(1, 25)):
            us += rng.randint(1, 3 * 10**6)
            vals = [round(rng.gauss(0, 1), rng.choice([2, 6, 17])) for _ in FEATURES]
            ts: Any = us / 10**6
            if rng.random() < 0.3:
                ts = (EPOCH + timedelta(microseconds=us)).isoformat()
            doc = {"ts": ts, "values": vals} if rng.random() < 0.5 else {"ts": ts, **dict(zip(FEATURES, vals))}
            per_stream[s].append((us / 10**6, dumps(doc)))
    order = [s for s in streams for _ in per_stream[s]]
    rng.shuffle(order)  # interleave streams, each in its own order
    pos = {s: 0 for s in streams}
    valid: list[tuple[str, bytes]] = []
    mixed: list[tuple[str, bytes, str | None]] = []
    last: dict[str, float] = {}
    for s in order:
        ts, p = per_stream[s][pos[s]]
        pos[s] += 1
        valid.append((s, p))
        mixed.append((s, p, None))
        last[s] = ts
        while rng.random() < 0.6:
            r = rng.random()
            target = rng.choice(list(last))  # a stream that has had a reading
            if r < 0.5:
                g, why = rng.choice(GARBAGE)
                mixed.append((rng.choice([target, "ghost", "a/b+#"]), g, why))
            elif r < 0.6:
                mixed.append((target, rng.randbytes(rng.randint(0, 64)) + b"\xff", "?"))
            elif r < 0.8:  # redelivery of one of the stream's readings sent so far
                old_ts, old_p = rng.choice(per_stream[target][: pos[target]])
                mixed.append((target, old_p, "duplicate" if old_ts == last[target] else "out_of_order"))
            else:  # an older reading with other values
                old_ts = last[target] - rng.choice([1e-6, 0.5, 1000.0])
                doc = {"ts": old_ts, "values": [rng.uniform(-1e6, 1e6) for _ in FEATURES]}
                mixed.append((target, dumps(doc), "out_of_order"))
    return valid, mixed


def same_result(a: Result, b: Result) -> None:
    assert (a.stream, a.ts, a.anomaly, a.warming_up, a.threshold) == (
        b.stream,
        b.ts,
        b.anomaly,
        b.warming_up,
        b.threshold,
    )
    assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-6)
    assert np.allclose(present(a.prediction), present(b.prediction), rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32))
def test_garbage_interleaved_with_valid_traffic_changes_nothing(model: OnnxStepModel, seed: int) -> None:
    rng = random.Random(seed)
    valid, mixed = traffic(rng)

    ref = Engine(model, max_streams=100)
    ref_out = all_scored(run(ref, valid, [rng.randint(1, 20) for _ in range(50)]))

    eng = Engine(model, max_streams=100)
    out = run(eng, [(s, p) for s, p, _ in mixed], [rng.randint(1, 40) for _ in range(50)])

    expected_rejections: dict[str, int] = {}
    got = iter(ref_out)
    for (s, p, why), o in zip(mixed, out, strict=True):
        if why is None:
            assert isinstance(o, Result), (s, p, o)
            same_result(o, next(got))
        else:
            assert isinstance(o, Rejection) and o.stream == s, (s, p, o)
            if why != "?":
                assert o.reason == why, (s, p, o)
            expected_rejections[o.reason] = expected_rejections.get(o.reason, 0) + 1
    assert dict(eng.stats.rejected) == expected_rejections
    assert eng.stats.results == ref.stats.results == len(valid)

    # Final state: the same streams (no ghost stream from garbage), the same rows.
    assert set(eng.table.slots) == set(ref.table.slots)
    for s in ref.table.slots:
        a, b = eng.table.row(s), ref.table.row(s)
        assert (a.last_ts, a.steps, a.anomalies) == (b.last_ts, b.steps, b.anomalies)
        for x, y in zip([*a.states, a.prediction], [*b.states, b.prediction]):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_rejections_only_batches_touch_no_state(model: OnnxStepModel) -> None:
    eng = Engine(model, max_streams=3)
    warm = [
        DEC.decode(f"s{k}", dumps({"ts": NOW - 10 + i, "values": [i, k, 1]}), NOW) for i in range(3) for k in range(3)
    ]
    eng.process(warm)
    before = snapshot(eng)
    junk = [DEC.decode(s, g, NOW) for s in ["s0", "s1", "new"] for g, _ in GARBAGE]
    junk += [DEC.decode("s1", dumps({"ts": NOW - 10 + i, "values": [9, 9, 9]}), NOW) for i in range(3)]
    outs = eng.process(junk)
    assert all(isinstance(o, Rejection) for o in outs)
    assert snapshot(eng) == before and eng.take_evicted() == [] and "new" not in eng.table


def test_overlong_or_empty_stream_ids_are_rejected_before_reaching_the_table() -> None:
    d = Decoder(["a"], max_stream_id=16)
    assert d.decode("x" * 16, b"1.0", 1_700_000_000.0) == Reading("x" * 16, 1_700_000_000.0, (1.0,))
    for stream in ("x" * 17, ""):
        out = d.decode(stream, b"1.0", 1_700_000_000.0)
        assert isinstance(out, Rejection) and out.reason == "bad_stream"


def test_infinite_ts_is_rejected_even_without_a_future_bound() -> None:
    d = Decoder(["a"], max_future_s=math.inf)
    out = d.decode("s", b'{"ts": 1e999, "a": 1}', 1_700_000_000.0)
    assert isinstance(out, Rejection) and out.reason == "bad_ts"
