"""Commands over MQTT (opt-in, `[commands] enabled`): parsing and reply payloads. Pure.

A command is a JSON object published on `commands.topic` (default `edge-lstm/command`):

    {"op": "reset" | "accept" | "inspect" | "checkpoint" | "reload" | "remove", "stream": "pump-7"}
    (`stream`: reset, accept, inspect, remove; `remove` = reset + its Home Assistant device deleted;
    `accept`: the stream's current regime is normal from now on)

The reply is JSON `{"op", "ok", ...}` (`"error"` when not ok), sent to the command's MQTT v5 response
topic with its correlation data, or (MQTT 3.1.1, or no response topic) to `<commands.topic>/reply`. A
malformed or unknown command gets an error reply and never disturbs scoring.

A v5 Response Topic is checked before the command runs (`response_topic_problem`): a topic with MQTT
wildcards would make the publish itself fail (paho raises), and a reply on one of the daemon's own topics
or under Home Assistant's discovery prefix would let anyone allowed to send a command overwrite retained
status, alarms or discovery configs. A refused Response Topic gets its error reply on `<topic>/reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

OPS = ("reset", "accept", "inspect", "checkpoint", "reload", "remove")
NEEDS_STREAM = ("reset", "accept", "inspect", "remove")
MAX_COMMAND_BYTES = 4096


@dataclass(frozen=True)
class Command:
    op: str
    stream: str | None = None


class CommandError(ValueError):
    """A command that cannot be run; its message goes back in the error reply."""


def parse(payload: bytes) -> Command:
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command larger than {MAX_COMMAND_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError(f"not a JSON object: {e}") from None
    if not isinstance(doc, dict):
        raise CommandError("not a JSON object")
    op = doc.get("op")
    if op not in OPS:
        raise CommandError(f"unknown op {op!r}: expected one of {list(OPS)}")
    unknown = sorted(set(doc) - {"op", "stream"})
    if unknown:
        raise CommandError(f"unknown field(s) {unknown}")
    stream = doc.get("stream")
    if op in NEEDS_STREAM:
        if not isinstance(stream, str) or not stream:
            raise CommandError(f"op {op!r} needs a non-empty 'stream'")
    elif stream is not None:
        raise CommandError(f"op {op!r} takes no 'stream'")
    return Command(op, stream)


MAX_TOPIC_BYTES = 65_535  # MQTT's limit on a topic name, in UTF-8 bytes


def response_topic_problem(
    topic: str,
    *,
    own_topics: Iterable[str],
    own_patterns: Iterable[Callable[[str], str | None]],
    forbidden_prefixes: Iterable[str],
    allowed_prefix: str,
) -> str | None:
    """Why a command's Response Topic must not be used, or None if it may.

    `own_topics`: the daemon's fixed topics (status, stats, errors, commands); `own_patterns`: each of
    its per-stream patterns' `stream_of` (a topic one of them names is the daemon's); `forbidden_prefixes`:
    topic trees never written by a reply (Home Assistant's discovery prefix); `allowed_prefix`: when not
    empty, every reply topic must start with it (`commands.response_prefix`)."""
    if not topic:
        return "response topic is empty"
    if "+" in topic or "#" in topic:
        return f"response topic {topic[:200]!r} contains an MQTT wildcard"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "response topic is not valid UTF-8"
    if "\x00" in topic or size > MAX_TOPIC_BYTES:
        return "response topic contains NUL or is longer than MQTT allows"
    if topic.startswith("$"):
        return f"response topic {topic[:200]!r} is a broker ($) topic"
    if allowed_prefix and not topic.startswith(allowed_prefix):
        return f"response topic {topic[:200]!r} is outside commands.response_prefix {allowed_prefix!r}"
    if topic in set(own_topics) or any(stream_of(topic) is not None for stream_of in own_patterns):
        return f"response topic {topic[:200]!r} is one of the daemon's own topics"
    for prefix in forbidden_prefixes:
        if topic == prefix or topic.startswith(prefix + "/"):
            return f"response topic {topic[:200]!r} is under the discovery prefix {prefix!r}"
    return None


def reply(op: str | None, ok: bool, **fields: Any) -> bytes:
    doc: dict[str, Any] = {"op": op, "ok": ok, **fields}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_plain).encode()


def _plain(x: Any) -> Any:
    """numpy scalars and arrays in `inspect` replies."""
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
