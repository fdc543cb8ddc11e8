"""Commands over MQTT (opt-in, `[commands] enabled`): parsing and reply payloads. Pure.

A command is a JSON object published on `commands.topic` (default `edge-lstm/command`):

    {"op": "reset" | "inspect" | "checkpoint" | "reload" | "remove", "stream": "pump-7"}
    (`stream`: reset, inspect, remove; `remove` = reset + its Home Assistant device deleted)

The reply is JSON `{"op", "ok", ...}` (`"error"` when not ok), sent to the command's MQTT v5 response
topic with its correlation data, or (MQTT 3.1.1, or no response topic) to `<commands.topic>/reply`. A
malformed or unknown command gets an error reply and never disturbs scoring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

OPS = ("reset", "inspect", "checkpoint", "reload", "remove")
NEEDS_STREAM = ("reset", "inspect", "remove")
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


def reply(op: str | None, ok: bool, **fields: Any) -> bytes:
    doc: dict[str, Any] = {"op": op, "ok": ok, **fields}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_plain).encode()


def _plain(x: Any) -> Any:
    """numpy scalars and arrays in `inspect` replies."""
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
