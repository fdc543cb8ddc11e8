"""Topic patterns and stream ids.

An input pattern such as `sensors/{stream}` subscribes to `sensors/+` and names the stream by the
`{stream}` level. Output topics are built from a *sanitised* stream id: MQTT wildcards, `/`, control
characters and anything outside a conservative set are percent-encoded (so two different ids never
map to the same topic), and very long ids are cut and suffixed with a hash of the full id.
"""

from __future__ import annotations

import hashlib
import re

PLACEHOLDER = "{stream}"
MAX_STREAM_ID = 128  # characters of a sanitised id kept in output topics
_SAFE = re.compile(r"[A-Za-z0-9._:@-]")  # `%` escapes; `~` only marks a hashed cut
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]+")


def _escape(m: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass"))


class TopicPattern:
    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        if levels.count(PLACEHOLDER) != 1 or pattern.count(PLACEHOLDER) != 1:
            raise ValueError(
                f"topic pattern {pattern!r} must contain {PLACEHOLDER} exactly once, as a whole topic level"
            )
        if any(("+" in lv or "#" in lv) for lv in levels):
            raise ValueError(f"topic pattern {pattern!r} must not contain MQTT wildcards")
        if "\x00" in pattern:
            raise ValueError(f"topic pattern {pattern!r} must not contain NUL (not allowed in MQTT topics)")
        self.pattern = pattern
        self.index = levels.index(PLACEHOLDER)
        self.levels = levels
        self.subscription = "/".join("+" if lv == PLACEHOLDER else lv for lv in levels)

    def stream_of(self, topic: str) -> str | None:
        """The stream a topic names, or None if the topic does not match the pattern."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        for i, (got, want) in enumerate(zip(parts, self.levels)):
            if i != self.index and got != want:
                return None
        stream = parts[self.index]
        return stream or None

    def topic_for(self, stream: str) -> str:
        return self.pattern.replace(PLACEHOLDER, sanitize_stream(stream))


def sanitize_stream(stream: str) -> str:
    """A topic-level-safe, injective rendering of a stream id (bounded length, hash-suffixed)."""
    safe = _UNSAFE.sub(_escape, stream)
    if len(safe) > MAX_STREAM_ID:
        digest = hashlib.sha256(stream.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        safe = f"{safe[: MAX_STREAM_ID - 17]}~{digest}"
    return safe
