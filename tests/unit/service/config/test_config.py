"""Configuration: TOML + environment (env wins), unknown keys and bad values refused, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.config import to_toml
from support.paths import ROOT

from edge_lstm.service.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("EDGE_LSTM_") or k in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"):
            monkeypatch.delenv(k)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    s = load_settings()
    assert s.model is None and s.state_dir == Path("state")
    m = s.mqtt
    assert (m.host, m.port, m.protocol, m.qos_in, m.qos_out) == ("127.0.0.1", 1883, "5", 1, 1)
    assert m.client_id.startswith("edge-lstm-")
    assert (m.input_pattern, m.output_pattern, m.status_topic, m.errors_topic) == (
        "sensors/{stream}",
        "edge-lstm/scores/{stream}",
        "edge-lstm/status",
        "edge-lstm/errors",
    )
    assert m.session_expiry_s == 86400
    e = s.engine
    assert (e.max_streams, e.max_batch, e.max_wait_ms, e.target_batch, e.threads, e.max_payload_bytes) == (
        10000,
        1024,
        20.0,
        64,
        1,
        4096,
    )
    assert s.log.format == "auto" and s.checkpoint.enabled


def test_toml_and_env_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(
        tmp_path,
        to_toml(
            {
                "model": "/m.onnx",
                "mqtt": {"host": "filehost", "port": 1884, "protocol": "3.1.1", "tls": {"enabled": True}},
                "engine": {"max_batch": 64},
            }
        ),
    )
    monkeypatch.setenv("EDGE_LSTM_MQTT__HOST", "envhost")
    monkeypatch.setenv("EDGE_LSTM_ENGINE__MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("EDGE_LSTM_STATE_DIR", "/var/lib/x")
    s = load_settings(p)
    assert s.mqtt.host == "envhost"  # env wins
    assert s.mqtt.port == 1884 and s.mqtt.protocol == "3.1.1" and s.mqtt.tls.enabled  # file kept
    assert s.engine.max_batch == 64 and s.engine.max_wait_ms == 2.5
    assert s.model == Path("/m.onnx") and s.state_dir == Path("/var/lib/x")


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "[mqtt]\nport = 2000\n")
    monkeypatch.setenv("EDGE_LSTM_CONFIG", str(p))
    assert load_settings().mqtt.port == 2000


def test_protocol_as_number(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[mqtt]\nprotocol = 5\n")).mqtt.protocol == "5"


def test_state_directory_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-lstm:/var/lib/other")
    assert load_settings().state_dir == Path("/var/lib/edge-lstm")


@pytest.mark.parametrize(
    "text, key",
    [
        ("bogus = 1\n", "bogus"),
        ("[mqtt]\nbogus = 1\n", "mqtt.bogus"),
        ("[mqtt.tls]\nca = 'x'\n", "mqtt.tls.ca"),
        ("[engine]\nmax_batch = 0\n", "engine.max_batch"),
        ("[mqtt]\nport = 'abc'\n", "mqtt.port"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nprotocol = '4'\n", "mqtt.protocol"),
        ("[mqtt]\nqos_in = 2\n", "mqtt.qos_in"),
        ("[mqtt]\ninput_pattern = 'sensors/+'\n", "mqtt.input_pattern"),
        ("[mqtt]\nstatus_topic = 'a/#'\n", "mqtt.status_topic"),
        ("[log]\nformat = 'xml'\n", "log.format"),
        ("[nosuch]\nx = 1\n", "nosuch"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, text))
    assert f"{key}:" in str(e.value)


@pytest.mark.parametrize(
    "env, key",
    [
        ({"EDGE_LSTM_MQTT__PORT": "abc"}, "EDGE_LSTM_MQTT__PORT"),
        ({"EDGE_LSTM_MQTT__BOGUS": "1"}, "EDGE_LSTM_MQTT__BOGUS"),
        ({"EDGE_LSTM_BOGUS": "1"}, "EDGE_LSTM_BOGUS"),
        ({"EDGE_LSTM_ENGINE__MAX_STREAMS": "-1"}, "EDGE_LSTM_ENGINE__MAX_STREAMS"),
    ],
)
def test_bad_env_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], key: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert key in str(e.value)


def test_invalid_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[mqtt\nport=1"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")


def test_password_secret_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(write(tmp_path, "[mqtt]\nusername = 'u'\npassword = 's3cret'\n"))
    assert "s3cret" not in repr(s) and s.mqtt.resolved_password() == "s3cret"
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt_password").write_text("fromcred\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert load_settings().mqtt.resolved_password() == "fromcred"
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, "[mqtt]\npassword = 5\n"))
    assert "mqtt.password:" in str(e.value) and "got" not in str(e.value)  # the value is never echoed


def test_example_config_is_valid() -> None:
    s = load_settings(ROOT / "systemd" / "config.toml")
    assert s.mqtt.status_topic == "edge-lstm/status"


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "edge_lstm.cli.run", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "text, env, needle",
    [
        ("[mqtt]\nbogus = 1\n", {}, "mqtt.bogus"),
        ("", {"EDGE_LSTM_MQTT__PORT": "abc"}, "EDGE_LSTM_MQTT__PORT"),
        ("[mqtt\n", {}, "invalid TOML"),
    ],
)
def test_daemon_exits_2_on_config_error(tmp_path: Path, text: str, env: dict[str, str], needle: str) -> None:
    p = write(tmp_path, text)
    r = _run(["--config", str(p)], env, tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr


def test_daemon_exits_2_on_bad_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    p = write(tmp_path, to_toml({"model": str(bad)}))
    r = _run(["--config", str(p)], {}, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "model" in r.stderr and "bad.onnx" in r.stderr
    r = _run(["--config", str(tmp_path / "none.toml")], {}, tmp_path)
    assert r.returncode == 2 and "none.toml" in r.stderr


def test_cli_run_exits_2_naming_the_key(tmp_path: Path) -> None:
    """The same through the real entry point: `python -m edge_lstm run --config FILE`."""
    import os

    p = write(tmp_path, "[engine]\nmax_batchx = 3\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_")}
    r = subprocess.run(
        [sys.executable, "-m", "edge_lstm", "run", "--config", str(p)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "engine.max_batchx: unknown key" in r.stderr


def test_cleartext_password_is_detected() -> None:
    from pydantic import SecretStr

    from edge_lstm.service.config import MqttSettings, TlsSettings, cleartext_password

    assert cleartext_password(MqttSettings(host="broker.lan", password=SecretStr("s")))
    assert not cleartext_password(MqttSettings(host="127.0.0.1", password=SecretStr("s")))
    assert not cleartext_password(MqttSettings(host="localhost", password=SecretStr("s")))
    assert not cleartext_password(
        MqttSettings(host="broker.lan", password=SecretStr("s"), tls=TlsSettings(enabled=True))
    )
    assert not cleartext_password(MqttSettings(host="broker.lan"))
