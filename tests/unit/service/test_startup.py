"""Bad starts: one line on stderr naming the key and its environment variable, exit code 2, never a
traceback (under systemd, exit 1 means `Restart=on-failure` restarts into the same error forever)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_lstm.durable.store import StateDirBusy
from edge_lstm.service import startup
from edge_lstm.service.config import ConfigError, load_settings
from edge_lstm.service.startup import StartupError, check_state_dir, check_tls

_SCRUB = ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("EDGE_LSTM_") or k in _SCRUB:
            monkeypatch.delenv(k)


def run_daemon(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_") and k not in _SCRUB}
    full.update({"EDGE_LSTM_MQTT__PORT": "1", **env})  # never reaches a broker: every case fails before
    return subprocess.run(
        [sys.executable, "-m", "edge_lstm", "run"], env=full, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def assert_bad_start(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edge-lstm: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_one_error_type_carries_the_exit_code() -> None:
    assert StartupError.exit_code == 2
    assert issubclass(ConfigError, StartupError) and issubclass(ConfigError, ValueError)
    assert issubclass(StateDirBusy, StartupError)
    assert startup.env_var("mqtt.tls.ca_file") == "EDGE_LSTM_MQTT__TLS__CA_FILE"


def test_state_dir_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    r = run_daemon({"EDGE_LSTM_STATE_DIR": str(tmp_path / "afile")}, tmp_path)
    assert_bad_start(r, "state_dir:", "not a directory", "[env EDGE_LSTM_STATE_DIR]")
    r = run_daemon({"EDGE_LSTM_STATE_DIR": str(tmp_path / "afile" / "sub")}, tmp_path)
    assert_bad_start(r, "state_dir:", "cannot create", "[env EDGE_LSTM_STATE_DIR]")


def test_state_dir_not_writable(tmp_path: Path) -> None:
    # An existing directory the daemon cannot write, as a read-only mount is; tests run as root, which
    # ignores permission bits, but not /proc's rules.
    r = run_daemon({"EDGE_LSTM_STATE_DIR": "/proc/1"}, tmp_path)
    assert_bad_start(r, "state_dir: /proc/1: not writable", "[env EDGE_LSTM_STATE_DIR]")


def test_state_dir_on_a_read_only_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(path: object, flags: int, *args: object) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", read_only)  # the module startup uses
    with pytest.raises(StartupError) as e:
        check_state_dir(tmp_path)
    assert str(e.value) == f"state_dir: {tmp_path}: not writable: Read-only file system [env EDGE_LSTM_STATE_DIR]"

    def mkdir_read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir_read_only)
    with pytest.raises(StartupError, match=r"state_dir: .*/new: cannot create: Read-only file system \[env"):
        check_state_dir(tmp_path / "new")


def test_state_dir_is_created_and_left_clean(tmp_path: Path) -> None:
    check_state_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


@pytest.mark.parametrize(
    "env, needles",
    [
        (
            {"EDGE_LSTM_MQTT__TLS__ENABLED": "true", "EDGE_LSTM_MQTT__TLS__CA_FILE": "/nope.pem"},
            ["mqtt.tls.ca_file: cannot read /nope.pem", "[env EDGE_LSTM_MQTT__TLS__CA_FILE]"],
        ),
        (
            {
                "EDGE_LSTM_MQTT__TLS__ENABLED": "true",
                "EDGE_LSTM_MQTT__TLS__CERT_FILE": "/nope.crt",
                "EDGE_LSTM_MQTT__TLS__KEY_FILE": "/nope.key",
            },
            ["mqtt.tls.cert_file: cannot read /nope.crt", "[env EDGE_LSTM_MQTT__TLS__CERT_FILE]"],
        ),
        (
            {"EDGE_LSTM_MQTT__PASSWORD_FILE": "/nope.txt"},
            ["mqtt.password_file: cannot read /nope.txt", "[env EDGE_LSTM_MQTT__PASSWORD_FILE]"],
        ),
        (
            {"CREDENTIALS_DIRECTORY": "/nope.d"},
            ["CREDENTIALS_DIRECTORY: /nope.d is not a directory", "[env CREDENTIALS_DIRECTORY]"],
        ),
        (
            {"EDGE_LSTM_MODEL": "/nope.onnx"},
            ["model: model file not found: /nope.onnx", "[env EDGE_LSTM_MODEL]"],
        ),
        (
            {"EDGE_LSTM_ENGINE__MAX_BATCH": "zero"},
            ["engine.max_batch", "[env EDGE_LSTM_ENGINE__MAX_BATCH]"],
        ),
    ],
)
def test_bad_files_name_the_key_and_variable(tmp_path: Path, env: dict[str, str], needles: list[str]) -> None:
    assert_bad_start(run_daemon(env, tmp_path), *needles)


def test_tls_files_that_are_not_pem(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    s = load_settings(mqtt={"tls": {"enabled": True, "ca_file": junk}})
    with pytest.raises(StartupError, match=r"^mqtt\.tls\.ca_file: .*junk\.pem: not a PEM CA certificate"):
        check_tls(s)
    s = load_settings(mqtt={"tls": {"enabled": True, "cert_file": junk, "key_file": junk}})
    with pytest.raises(StartupError, match=r"^mqtt\.tls\.cert_file: .*\[env EDGE_LSTM_MQTT__TLS__CERT_FILE\]$"):
        check_tls(s)
    s = load_settings(mqtt={"tls": {"enabled": True, "ca_file": tmp_path}})
    with pytest.raises(StartupError, match="is a directory"):
        check_tls(s)
    check_tls(load_settings(mqtt={"tls": {"enabled": True}}))  # the system CA store


def test_unreadable_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt_password").mkdir()  # a credential that is not a file
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"credential mqtt_password: .* is a directory.*\[env CREDENTIALS_DIRECTORY\]"
    ):
        load_settings().mqtt.resolved_password()


def test_version_imports_neither_onnxruntime_nor_paho() -> None:
    code = (
        "import sys\n"
        "from edge_lstm.cli import main\n"
        "for argv in (['--version'], ['--help'], ['run', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('onnxruntime', 'paho', 'numpy') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout
    assert r.stdout.startswith("edge-lstm ")


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --config and no $EDGE_LSTM_CONFIG: /etc/edge-lstm/config.toml is used when it exists."""
    from edge_lstm.cli import run

    monkeypatch.delenv("EDGE_LSTM_CONFIG", raising=False)
    default = tmp_path / "config.toml"
    monkeypatch.setattr(run, "DEFAULT_CONFIG", default)
    assert run.config_path(None) is None  # absent: none
    default.write_text("")
    assert run.config_path(None) == str(default)
    monkeypatch.setenv("EDGE_LSTM_CONFIG", "/x.toml")
    assert run.config_path(None) == "/x.toml" and run.config_path("/given.toml") == "/given.toml"
