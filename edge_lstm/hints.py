"""What to do about a rejected reading, one line per reason: published with the rejection on
`mqtt.errors_topic` and logged with it, so that the sender's author sees the fix, not only the fault.

The reasons are the stable codes of README, "Rejections"; a test checks every one has a hint.
"""

from __future__ import annotations

HINTS: dict[str, str] = {
    "too_large": "send one reading per message, within engine.max_payload_bytes",
    "not_utf8": "send the payload as UTF-8 JSON text",
    "not_json": 'send a JSON object, e.g. {"ts": 1764230411, "values": [46.2, 0.52, 10.6]}',
    "bad_shape": "send a JSON object with 'values' or one field per feature (a bare number for one feature)",
    "missing_feature": "send every feature the model reads (`edge-lstm inspect` lists them)",
    "wrong_length": "'values' holds one number per feature, in the model's order (`edge-lstm inspect`)",
    "not_number": "send feature values as JSON numbers",
    "not_finite": "send finite numbers (no NaN or Infinity); leave the reading out instead",
    "bad_ts": "ts: epoch seconds (or ms, µs) after 2000, or an ISO-8601 string; or leave it out",
    "ts_in_future": "check the sender's clock and the unit of ts; or leave ts out (stamped on arrival)",
    "duplicate": "already scored; publish a new ts",
    "out_of_order": "older than the stream's last reading; send each stream's readings in time order",
    "bad_stream": "publish on the input pattern's topics (mqtt.input_pattern) with a non-empty stream id",
    "internal_error": "a bug in edge-lstm, not in the reading: please report it with the logged error",
}


def hint(reason: str) -> str:
    return HINTS.get(reason, "")
