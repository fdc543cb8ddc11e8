"""Stream ids and topic patterns: hostile ids never reach an output topic unsanitised, never collide.

sanitize_stream must give a single MQTT topic level (no `/`), without wildcards (`+`, `#`), control
characters or anything a broker or a subscriber could misread, of bounded length, and injective: two
different stream ids never share an output topic.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_lstm.topics import MAX_STREAM_ID, PLACEHOLDER, TopicPattern, sanitize_stream

# Every code point, lone surrogates and control characters included (MQTT topics from a broker are
# UTF-8, but a stream id may come from a replay file or a test, and must still be handled).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
NASTY = "+#/\x00\x01\x1f\x7f\x80\x9f$%~ \t\n\r\u200b\u202e\ufeff\ud800\udfff😀é/+#"
NASTY_CHAR = st.sampled_from(NASTY)
STREAM_IDS = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(st.one_of(NASTY_CHAR, st.sampled_from("aZ09._:@-")), max_size=60),
    st.text(ANY_CHAR, min_size=100, max_size=400),  # around and beyond the length cut
)
OUTPUT_CHARS = re.compile(r"[A-Za-z0-9._:@%~-]*")


def unsanitize(safe: str) -> str:
    """Inverse of sanitize_stream for ids that were not cut (the proof that those are injective)."""
    out = bytearray()
    i = 0
    while i < len(safe):
        if safe[i] == "%":
            out.append(int(safe[i + 1 : i + 3], 16))
            i += 3
        else:
            out += safe[i].encode("ascii")
            i += 1
    return out.decode("utf-8", "surrogatepass")


def check_safe(stream: str, safe: str) -> None:
    assert OUTPUT_CHARS.fullmatch(safe), (stream, safe)  # ASCII, no + # / $, no control chars
    assert not any(c in safe for c in "+#/\x00")
    assert not any(ord(c) < 0x20 or ord(c) >= 0x7F for c in safe)
    assert len(safe) <= MAX_STREAM_ID
    assert sanitize_stream(stream) == safe  # deterministic


@given(STREAM_IDS)
@example("a/b")
@example("+")
@example("#")
@example("sensor/+/#")
@example("\x00\x01\x1b[31m")
@example("$SYS")
@example("~")
@example("%2F")
@example("\ud800")
@example("x" * MAX_STREAM_ID)
@example("x" * (MAX_STREAM_ID + 1))
@example("é" * 10_000)
def test_sanitized_id_is_one_safe_bounded_level(stream: str) -> None:
    safe = sanitize_stream(stream)
    check_safe(stream, safe)
    if "~" in safe:
        # Cut: exactly one marker, followed by the hash, and only for ids whose encoding is too long.
        assert safe.count("~") == 1 and re.fullmatch(r"[0-9a-f]{16}", safe.split("~")[1])
        assert len(safe) == MAX_STREAM_ID
    else:
        assert unsanitize(safe) == stream  # invertible, hence injective


def test_plain_ids_are_kept_as_they_are() -> None:
    for s in ["pump-1", "line_3.motor:7", "a@b", "X" * MAX_STREAM_ID]:
        assert sanitize_stream(s) == s


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STREAM_IDS, min_size=2, max_size=200, unique=True))
def test_no_collisions_in_random_samples(ids: list[str]) -> None:
    assert len({sanitize_stream(s) for s in ids}) == len(ids)


def near_collisions() -> list[str]:
    """Ids built to collide if the encoding were lossy: escapes vs the characters they encode,
    wildcards vs their replacements, long ids sharing a prefix, ids straddling the length cut."""
    ids = {
        "a/b",
        "a%2Fb",
        "a%2fb",
        "a+b",
        "a%2Bb",
        "a#b",
        "a%23b",
        "a_b",
        "a-b",
        "a b",
        "a%20b",
        "a~b",
        "a%7Eb",
        "%",
        "%25",
        "%2525",
        "~",
        "",
        "\x00",
        "%00",
        "é",
        "%C3%A9",
        "e\u0301",
        "\ud800",
        "%ED%A0%80",
        "\ufeff",
        "\u200b",
    }
    rng = random.Random(4)
    base = "sensor/" * 20  # 200 characters once encoded: always cut
    for i in range(8_000):
        ids.add(f"{base}{i}")  # long, differ only at the end (after the cut)
        ids.add(f"{i}{base}")  # long, differ only at the start
        ids.add("x" * (MAX_STREAM_ID - 20 + i % 40) + str(i))  # around the cut
        n = rng.randint(1, 30)
        ids.add("".join(rng.choice(NASTY + "a0") for _ in range(n)))
        ids.add("%" + "".join(rng.choice("0123456789ABCDEFabcdef%") for _ in range(n)))
        ids.add("".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(n)))
    return sorted(ids)


def test_no_collisions_on_a_large_sample_of_near_collisions() -> None:
    ids = near_collisions()
    assert len(ids) > 40_000
    seen: dict[str, str] = {}
    for s in ids:
        safe = sanitize_stream(s)
        assert seen.setdefault(safe, s) == s, f"{s!r} and {seen[safe]!r} both map to {safe!r}"
        assert len(safe) <= MAX_STREAM_ID


# -- TopicPattern ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "sensors/stream",  # no placeholder
        "sensors/{stream}/{stream}",  # twice
        "sensors/x{stream}",  # not a whole level
        "sensors/{stream}x",
        "{stream}{stream}",
        "sensors/+/{stream}",  # wildcards
        "sensors/{stream}/#",
        "sensors#/{stream}",
        "a+/{stream}",
        "sensors/{stream}\x00",  # NUL is not allowed in an MQTT topic
        "sensors\x00/{stream}",
        "",
    ],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        TopicPattern(pattern)


@pytest.mark.parametrize(
    "pattern, subscription",
    [
        ("sensors/{stream}", "sensors/+"),
        ("{stream}", "+"),
        ("plant/{stream}/telemetry", "plant/+/telemetry"),
        ("edge-lstm/scores/{stream}", "edge-lstm/scores/+"),
    ],
)
def test_good_patterns(pattern: str, subscription: str) -> None:
    p = TopicPattern(pattern)
    assert p.subscription == subscription
    assert p.stream_of(pattern.replace(PLACEHOLDER, "pump-1")) == "pump-1"


LEVEL = st.text(
    st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=["Cs"], exclude_characters="/+#"),
    max_size=8,
)
TOPIC_LEVEL = st.text(
    st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=["Cs"], exclude_characters="/"),
    min_size=1,
    max_size=50,
)


def mqtt_matches(subscription: str, topic: str) -> bool:
    sub, top = subscription.split("/"), topic.split("/")
    return len(sub) == len(top) and all(s == "+" or s == t for s, t in zip(sub, top))


@given(
    st.lists(LEVEL.filter(lambda lv: PLACEHOLDER not in lv), max_size=3),
    st.lists(LEVEL.filter(lambda lv: PLACEHOLDER not in lv), max_size=3),
    TOPIC_LEVEL,
    STREAM_IDS,
)
def test_stream_of_and_topic_for(prefix: list[str], suffix: list[str], level: str, stream: str) -> None:
    p = TopicPattern("/".join([*prefix, PLACEHOLDER, *suffix]))
    topic = "/".join([*prefix, level, *suffix])
    assert mqtt_matches(p.subscription, topic)
    assert p.stream_of(topic) == level
    # Topics of another shape, or with another fixed level, or an empty stream level: not a stream.
    assert p.stream_of(topic + "/extra") is None
    assert p.stream_of("extra/" + topic) is None
    assert p.stream_of("/".join([*prefix, "", *suffix])) is None
    if prefix:
        assert p.stream_of("/".join([prefix[0] + "x", *prefix[1:], level, *suffix])) is None
    # Output topics: the pattern with the sanitised id, exactly one level, no wildcards.
    out = p.topic_for(stream)
    assert out == "/".join([*prefix, sanitize_stream(stream), *suffix])
    assert "+" not in out.split("/")[len(prefix)] and "#" not in out
    assert mqtt_matches(p.subscription, out)
    assert p.stream_of(out) == (sanitize_stream(stream) or None)


def test_the_pipelines_output_topic_cache_is_bounded() -> None:
    from edge_lstm.pipeline import TOPIC_CACHE, Pipeline

    p = Pipeline(None, None, TopicPattern("sensors/{stream}"), TopicPattern("out/{stream}"))  # type: ignore[arg-type]
    for i in range(TOPIC_CACHE * 3):
        assert p.topic_for(f"s/{i}") == TopicPattern("out/{stream}").topic_for(f"s/{i}")
    assert len(p._topics) <= TOPIC_CACHE  # no entry per stream of a large table
    assert p.topic_for("s/1") == p.topic_for("s/1")
