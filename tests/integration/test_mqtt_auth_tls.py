"""The daemon (in-process) against brokers that need MQTT 3.1.1, a password, or TLS."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from support.mqtt import Collector, Publisher
from support.traffic import reading_payload

from edge_lstm.demo.broker import BrokerUnavailable, PrivateBroker, free_port
from edge_lstm.service.config import load_settings
from edge_lstm.service.daemon import Daemon
from edge_lstm.service.logs import configure
from edge_lstm.service.mqtt import MqttLink

pytestmark = pytest.mark.integration

T0 = 1_700_000_000


class _Log(io.StringIO):
    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.getvalue().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


@pytest.fixture
def log() -> Iterator[_Log]:
    buf = _Log()
    configure("info", "json", stream=buf)
    yield buf
    structlog.reset_defaults()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in [k for k in os.environ if k.startswith("EDGE_LSTM_")]:
        monkeypatch.delenv(k)
    return monkeypatch


def _broker(**kw: Any) -> PrivateBroker:
    try:
        return PrivateBroker(**kw).start()
    except BrokerUnavailable as e:
        pytest.skip(str(e))


def _close_broker(b: PrivateBroker) -> None:
    b.stop()
    if b._tmp is not None:
        b._tmp.cleanup()


class _Running:
    def __init__(self, settings: Any) -> None:
        self.daemon = Daemon(settings)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()


def _settings(model: Path, state: Path, port: int, **mqtt: Any) -> Any:
    return load_settings(
        None,
        model=str(model),
        state_dir=str(state),
        mqtt={"port": port, "client_id": f"auth-{time.monotonic_ns()}", **mqtt},
        log={"stats_interval_s": 0},
    )


def _round_trip(
    broker_port: int, collector: Callable[..., Collector], publisher: Callable[[int], Publisher], n: int = 3
) -> list[dict[str, Any]]:
    col = collector(broker_port, ["edge-lstm/scores/#"])
    pub = publisher(broker_port)
    for i in range(n):
        pub.send("sensors/pump-1", reading_payload(T0 + i, [i, 1, 2]))
    pub.flush()
    return col.wait_count("edge-lstm/scores/", n)


def test_mqtt_311_end_to_end(
    step_model_path: Path,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    log: _Log,
) -> None:
    """EDGE_LSTM_MQTT__PROTOCOL=3.1.1: persistent session via clean_session=False, results flow."""
    b = _broker()
    try:
        clean_env.setenv("EDGE_LSTM_MQTT__PROTOCOL", "3.1.1")
        s = _settings(step_model_path, tmp_path / "s", b.port)
        assert s.mqtt.protocol == "3.1.1"
        r = _Running(s)
        try:
            assert r.daemon.ready.wait(15)
            results = _round_trip(b.port, collector, publisher)
            assert [x["ts"] for x in results] == [T0, T0 + 1, T0 + 2]
            link = r.daemon.link
            assert isinstance(link, MqttLink) and link.v5 is False and link.client._protocol == 4  # MQTT 3.1.1
        finally:
            r.close()
        st = r.daemon.stats()
        assert st["results"] == 3 and st["acked"] == 3
        connected = [e for e in log.events() if e.get("event") == "mqtt_connected"]
        assert connected and connected[0]["protocol"] == "3.1.1"
    finally:
        _close_broker(b)


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(pw), "edge", "s3cret"], check=True, capture_output=True)
    pw.chmod(0o600)
    b = _broker(extra_conf=f"password_file {pw}")  # anonymous still allowed: the test clients use it
    yield b
    _close_broker(b)


def test_password_right(
    password_broker: PrivateBroker,
    step_model_path: Path,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    log: _Log,
) -> None:
    pw_file = tmp_path / "mqtt_password"
    pw_file.write_text("s3cret\n")  # like a systemd credential: trailing newline is stripped
    s = _settings(step_model_path, tmp_path / "s", password_broker.port, username="edge", password_file=str(pw_file))
    r = _Running(s)
    try:
        assert r.daemon.ready.wait(15)
        assert len(_round_trip(password_broker.port, collector, publisher)) == 3
    finally:
        r.close()


def test_password_wrong_is_refused_clearly_without_busy_looping(
    password_broker: PrivateBroker, step_model_path: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch, log: _Log
) -> None:
    s = _settings(
        step_model_path,
        tmp_path / "s",
        password_broker.port,
        username="edge",
        password="wrong",
        reconnect_min_delay_s=1.0,
        reconnect_max_delay_s=30.0,
    )
    r = _Running(s)
    try:
        t_wall, t_cpu = time.monotonic(), time.process_time()
        time.sleep(3.0)
        cpu = time.process_time() - t_cpu
        wall = time.monotonic() - t_wall
        assert not r.daemon.ready.is_set() and r.daemon.link.connects == 0
        refused = [e for e in log.events() if e.get("event") == "mqtt_connect_refused"]
        assert refused, log.getvalue()[-2000:]
        assert refused[0]["level"] == "error"
        assert "password" in refused[0]["reason"].lower() or "authori" in refused[0]["reason"].lower()
        assert len(refused) <= 4  # backoff 1 s, 2 s, ...: not a tight retry loop
        assert cpu < 0.5 * wall, (cpu, wall)  # idle while refused (whole test process)
    finally:
        r.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[PrivateBroker, int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path / "pki"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=edge-lstm test CA",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )
    tls_port = free_port()
    # A second listener with TLS (the settings after a `listener` line belong to it); the plain one
    # stays for the test's own clients.
    b = _broker(
        extra_conf=f"listener {tls_port} 127.0.0.1\ncafile {d / 'ca.crt'}\n"
        f"certfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
    )
    yield b, tls_port, d
    _close_broker(b)


def test_tls_with_private_ca(
    tls_broker: tuple[PrivateBroker, int, Path],
    step_model_path: Path,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    collector: Callable[..., Collector],
    publisher: Callable[[int], Publisher],
    log: _Log,
) -> None:
    b, tls_port, pki = tls_broker
    s = _settings(step_model_path, tmp_path / "s", tls_port, tls={"enabled": True, "ca_file": str(pki / "ca.crt")})
    r = _Running(s)
    try:
        assert r.daemon.ready.wait(15), log.getvalue()[-2000:]
        assert len(_round_trip(b.port, collector, publisher)) == 3
    finally:
        r.close()


def test_tls_untrusted_server_is_not_connected(
    tls_broker: tuple[PrivateBroker, int, Path],
    step_model_path: Path,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    log: _Log,
) -> None:
    """Without the private CA (system store only) the handshake fails: no connection, no busy loop."""
    b, tls_port, pki = tls_broker
    s = _settings(
        step_model_path,
        tmp_path / "s",
        tls_port,
        tls={"enabled": True},
        reconnect_min_delay_s=1.0,
        reconnect_max_delay_s=30.0,
    )
    r = _Running(s)
    try:
        t_wall, t_cpu = time.monotonic(), time.process_time()
        time.sleep(2.0)
        assert time.process_time() - t_cpu < 0.5 * (time.monotonic() - t_wall)
        assert not r.daemon.ready.is_set() and r.daemon.link.connects == 0
        failed = [e for e in log.events() if e.get("event") == "mqtt_connect_failed"]
        assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0]["error"], log.getvalue()[-2000:]
        assert len(failed) <= 3  # backoff, not a tight loop
    finally:
        r.close()
