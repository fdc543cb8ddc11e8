"""One timestamp rule for the daemon's decoder and for `replay` (reading.parse_ts, README "MQTT topics
and payloads"): a numeric ts above 1e11 is epoch milliseconds, above 1e14 epoch microseconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_lstm.cli.rows import RowReader
from edge_lstm.reading import MIN_TS, MS_ABOVE, US_ABOVE, Decoder, Reading, Rejection, TimestampError, parse_ts

NOW = 1_750_000_000.0
# Seconds from 2000 to a day past NOW: every such time in all three units.
SECONDS = st.floats(min_value=MIN_TS, max_value=NOW + 86_400, allow_nan=False)


@given(SECONDS)
def test_seconds_milliseconds_and_microseconds_mean_the_same_time(t: float) -> None:
    assert parse_ts(t, NOW) == t
    assert parse_ts(t * 1e3, NOW) == pytest.approx(t, abs=1e-6)
    assert parse_ts(t * 1e6, NOW) == pytest.approx(t, abs=1e-6)


@given(st.integers(min_value=int(MIN_TS * 1000), max_value=int(NOW * 1000)))
def test_integer_milliseconds_as_esp32_and_javascript_send_them(ms: int) -> None:
    assert parse_ts(ms, NOW) == ms / 1000
    assert parse_ts(float(ms), NOW) == ms / 1000  # the decoder parses every JSON integer to float


def test_the_rule_boundaries() -> None:
    assert MS_ABOVE == 1e11 and US_ABOVE == 1e14
    # 1e11 itself is seconds (year 5138: far in the future); just above it, milliseconds (1973: too old).
    with pytest.raises(TimestampError) as e:
        parse_ts(MS_ABOVE, NOW, 300.0)
    assert e.value.reason == "ts_in_future" and "read as epoch seconds" in e.value.detail
    with pytest.raises(TimestampError) as e:
        parse_ts(math.nextafter(MS_ABOVE, math.inf), NOW)
    assert e.value.reason == "bad_ts" and "milliseconds" in e.value.detail
    with pytest.raises(TimestampError) as e:
        parse_ts(math.nextafter(US_ABOVE, math.inf), NOW)
    assert e.value.reason == "bad_ts" and "microseconds" in e.value.detail


@pytest.mark.parametrize(
    "raw, unit",
    [
        ((NOW + 3600) * 1000, "milliseconds"),
        ((NOW + 3600) * 1e6, "microseconds"),
        (NOW + 3600, "seconds"),
        (1e20, "microseconds"),  # nanoseconds are not recognised: read as µs, in the future
    ],
)
def test_a_ts_still_in_the_future_hints_at_the_unit(raw: float, unit: str) -> None:
    with pytest.raises(TimestampError) as e:
        parse_ts(raw, NOW, 300.0)
    assert e.value.reason == "ts_in_future"
    assert f"read as epoch {unit}" in e.value.detail and "above 1e11 is epoch ms" in e.value.detail
    out = Decoder(["a"]).decode("s", f'{{"ts": {raw!r}, "a": 1}}'.encode(), NOW)
    assert isinstance(out, Rejection) and out.reason == "ts_in_future" and unit in out.detail


def test_strings_none_and_bad_values() -> None:
    assert parse_ts(None, NOW) == NOW
    assert parse_ts("2025-06-15T15:06:40Z", NOW) == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC).timestamp()
    assert parse_ts("2025-06-15T15:06:40", NOW) == parse_ts("2025-06-15T15:06:40+00:00", NOW)  # no zone: UTC
    for raw, reason in [
        (math.nan, "bad_ts"),
        (math.inf, "bad_ts"),
        (10**400, "bad_ts"),
        (True, "bad_ts"),
        ("yesterday", "bad_ts"),
        ([1], "bad_ts"),
        (-1, "bad_ts"),
        (MIN_TS - 1, "bad_ts"),
        ("2100-01-01", "ts_in_future"),
    ]:
        with pytest.raises(TimestampError) as e:
            parse_ts(raw, NOW, 300.0)
        assert e.value.reason == reason, raw
        assert isinstance(e.value, ValueError)


@given(SECONDS, st.sampled_from([1, 1000, 1_000_000]))
def test_decoder_and_replay_share_the_rule(t: float, per_second: int) -> None:
    raw = round(t * per_second)  # as a sensor sends it: an integer count of its unit
    expected = raw / per_second
    out = Decoder(["a"], max_future_s=math.inf).decode("s", f'{{"ts": {raw}, "a": 1}}'.encode(), NOW)
    assert isinstance(out, Reading) and out.ts == expected
    row = RowReader(["ts", "a"], ["a"]).convert([str(raw), "1"], 2)
    assert isinstance(row, Reading) and row.ts == expected


def test_the_fast_path_still_takes_float_seconds() -> None:
    d = Decoder(["a"])
    out = d.decode("s", b'{"ts": 1750000000.25, "a": 1}', NOW)
    assert isinstance(out, Reading) and out.ts == 1750000000.25
