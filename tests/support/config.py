"""Daemon configuration for tests (a TOML writer, a config against a test broker) and JSON log lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for nested dicts of scalars (enough for config files in tests)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


def daemon_config(broker: Any, model: Path, state_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config for a daemon talking to `broker`, with a unique client id; `sections` are merged in."""
    cfg: dict[str, Any] = {
        "model": str(model),
        "state_dir": str(state_dir),
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "client_id": f"edge-lstm-test-{os.getpid()}-{time.monotonic_ns() % 10**9}",
            "reconnect_min_delay_s": 0.2,
            "reconnect_max_delay_s": 1.0,
        },
        "log": {"format": "json", "level": "info", "stats_interval_s": 1.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON-object lines of a log (structlog's JSON renderer), skipping anything else."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out
