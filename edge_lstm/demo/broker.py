"""A private mosquitto on a free loopback port: for `edge-lstm demo` and the integration tests.

Installs nothing: if the binary is missing, says how to get it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise BrokerUnavailable(
        "the mosquitto broker binary was not found. Install it with "
        "`sudo apt-get install mosquitto` (Debian, Raspberry Pi OS) or `./dev setup`."
    )


class PrivateBroker:
    """`with PrivateBroker() as b:` → a mosquitto listening on 127.0.0.1:b.port.

    `persistence=True` keeps sessions and queued messages across `restart()` (like a production
    broker with `persistence true`). `extra_conf` lines are appended to the generated config.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        persistence: bool = False,
        extra_conf: str = "",
        workdir: str | Path | None = None,
    ) -> None:
        self.binary = find_mosquitto()
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="edge-lstm-mosq-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Started as root, mosquitto switches to the `mosquitto` user (conf `user`, default
            # "mosquitto"), which cannot write into our 0700 root-owned temp dir: the log and the
            # persistence file would silently not be written. Stay root: it is a private test broker.
            lines.append("user root")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")

    def start(self, timeout: float = 10.0) -> PrivateBroker:
        self._write_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise BrokerUnavailable(f"mosquitto exited at start: {err.strip()} {log.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self, down_s: float = 0.0, kill: bool = False) -> None:
        self.stop(kill=kill)
        if down_s:
            time.sleep(down_s)
        self.start()

    def __enter__(self) -> PrivateBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
