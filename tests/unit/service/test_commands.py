"""Command parsing and replies (edge_lstm/service/commands.py): every malformed command is a clear
error, never an exception that could disturb scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_lstm.service.commands import Command, CommandError, parse, reply


@pytest.mark.parametrize(
    "payload, want",
    [
        (b'{"op": "reset", "stream": "pump-7"}', Command("reset", "pump-7")),
        (b'{"op": "accept", "stream": "pump-7"}', Command("accept", "pump-7")),
        (b'{"op": "inspect", "stream": "a/b"}', Command("inspect", "a/b")),
        (b'{"op": "checkpoint"}', Command("checkpoint")),
        (b'{"op": "reload"}', Command("reload")),
    ],
)
def test_valid_commands(payload: bytes, want: Command) -> None:
    assert parse(payload) == want


@pytest.mark.parametrize(
    "payload, needle",
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"op": "explode"}', "unknown op 'explode'"),
        (b'{"op": "reset"}', "needs a non-empty 'stream'"),
        (b'{"op": "accept"}', "needs a non-empty 'stream'"),
        (b'{"op": "reset", "stream": 7}', "needs a non-empty 'stream'"),
        (b'{"op": "checkpoint", "stream": "x"}', "takes no 'stream'"),
        (b'{"op": "checkpoint", "force": true}', "unknown field(s) ['force']"),
        (b"\xff\xfe", "not a JSON object"),
        (b" " * 5000, "larger than"),
    ],
)
def test_bad_commands_are_clear_errors(payload: bytes, needle: str) -> None:
    with pytest.raises(CommandError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse(payload)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_command_error(payload: bytes) -> None:
    try:
        parse(payload)
    except CommandError:
        pass


def test_reply_is_json_with_numpy_values() -> None:
    doc = json.loads(reply("inspect", True, steps=np.int64(3), mu=np.array([1.0, 2.0])))
    assert doc == {"op": "inspect", "ok": True, "steps": 3, "mu": [1.0, 2.0]}
    assert json.loads(reply(None, False, error="bad")) == {"op": None, "ok": False, "error": "bad"}
