"""Unknown keys at every level, in the file and in the environment, name the nearest known key;
values from the environment parse as they do from the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_lstm.service.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("EDGE_LSTM_") or k in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(k)


@pytest.mark.parametrize(
    "env, message",
    [
        ("EDGE_LSTM_ENGINE__MAX_STREAMZ", "engine.max_streamz: unknown key; did you mean 'max_streams'?"),
        ("EDGE_LSTM_MQTT__TLS__ENABLD", "mqtt.tls.enabld: unknown key; did you mean 'enabled'?"),
        ("EDGE_LSTM_MODLE", "modle: unknown key; did you mean 'model'?"),
        ("EDGE_LSTM_SCORNG__RISK", "scorng: unknown key; did you mean 'scoring'?"),
        ("EDGE_LSTM_MQTT__PORT__X", "mqtt.port is a value, not a section"),
    ],
)
def test_unknown_env_key_suggests_the_nearest(monkeypatch: pytest.MonkeyPatch, env: str, message: str) -> None:
    monkeypatch.setenv(env, "1")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value) == f"environment variable {env}: {message}"


def test_unknown_env_key_far_from_any_lists_the_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_LSTM_CHECKPOINT__ZZZ", "1")
    with pytest.raises(ConfigError, match=r"checkpoint\.zzz: unknown key \(known: enabled, fsync_interval_s, "):
        load_settings()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[engine]\nmax_streamz = 3\n", "engine.max_streamz: unknown key; did you mean 'max_streams'? "),
        ("[mqtt.tls]\nca = 'x'\n", "mqtt.tls.ca: unknown key; did you mean 'ca_file'? "),
        ("modle = 'x'\n", "modle: unknown key; did you mean 'model'? "),
        ("[alarms]\nraise_n = 3\n", "alarms: unknown key; did you mean 'alarm'? "),
    ],
)
def test_unknown_file_key_suggests_the_nearest(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["EDGE_LSTM_MQTT__QOS_OUT", "EDGE_LSTM_MQTT__QOS_IN"])
def test_qos_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    key = name.rsplit("__", 1)[1].lower()
    monkeypatch.setenv(name, "0")
    assert getattr(load_settings().mqtt, key) == 0
    monkeypatch.setenv(name, "2")
    with pytest.raises(ConfigError, match=f"mqtt.{key}: "):
        load_settings()
