"""The daemon under test: `python -m edge_lstm run` as a restartable subprocess, or a Daemon in a thread."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.config import json_lines, to_toml

# What a daemon configured by `settings` (EDGE_LSTM_* variables) gets unless the test says otherwise.
ENV_DEFAULTS: dict[str, Any] = {
    "log.format": "json",
    "log.level": "info",
    "log.stats_interval_s": 1.0,
    "mqtt.host": "127.0.0.1",
    "mqtt.reconnect_min_delay_s": 1,
    "mqtt.reconnect_max_delay_s": 2,
}

# Inherited from the test run, these would configure the daemon behind the test's back.
_SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY")

_ids = itertools.count()


class DaemonProcess:
    """`python -m edge_lstm run`, configured by a TOML file (`config` dict or `config_text`) and/or by
    EDGE_LSTM_* environment variables (`settings`: dotted keys such as "mqtt.port", on top of
    ENV_DEFAULTS); `env` is added to the environment as is (NOTIFY_SOCKET, ...). The environment starts
    from the test run's without any EDGE_LSTM_* or systemd variables.

    Nothing runs until `start()`. The JSON log lines of each start go to their own file in `workdir`
    (`logs`); `events(run=...)` parses them. `start()` again after `kill9()` or `terminate()` is the same
    daemon (same config, client id and state dir) coming back after a crash or a restart.
    """

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        *,
        config_text: str | None = None,
        settings: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = f"daemon-{os.getpid()}-{next(_ids)}"  # several daemons may share a workdir
        self.args = [sys.executable, "-m", "edge_lstm", "run"]
        self.config_path: Path | None = None
        if config is not None or config_text is not None:
            self.config_path = workdir / f"{self.name}.toml"
            self.config_path.write_text(config_text if config_text is not None else to_toml(config or {}))
            self.args += ["--config", str(self.config_path)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_LSTM_") and k not in _SCRUBBED}
        if settings is not None:
            for key, value in {**ENV_DEFAULTS, **settings}.items():
                full_env["EDGE_LSTM_" + key.upper().replace(".", "__")] = str(value)
        full_env.update(env or {})
        self.env = full_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills = 0

    def start(self) -> DaemonProcess:
        assert not self.running(), "already running"
        log = self.workdir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=f, cwd=self.workdir)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """A crash: SIGKILL (counted in `kills`), then reap."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Where is it stuck? The log says how far the shutdown got; SIGUSR1 adds every thread's
            # stack to it (faulthandler, cli/run.py).
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            raise AssertionError(
                f"daemon did not exit {timeout} s after SIGTERM; log:\n{self.text()[-12000:]}"
            ) from None

    def stop(self) -> None:
        """Teardown: kill whatever is still running."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def text(self, run: int = -1) -> str:
        """The log (stderr) of one start, default the latest."""
        return self.logs[run].read_text(errors="replace") if self.logs else ""

    def events(self, run: int | None = -1) -> list[dict[str, Any]]:
        """Parsed log lines of one start (default: the latest), or of all starts (run=None)."""
        files = self.logs if run is None else [self.logs[run]]
        return [doc for p in files for doc in json_lines(p.read_text(errors="replace"))]

    def wait_event(
        self, name: str, timeout: float = 30.0, count: int = 1, where: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        """The `count`-th `name` event (matching `where`) of the latest start; fails if the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.get("event") == name and where(e)]
            if len(found) >= count:
                return found[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} before {name!r}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name!r} event within {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_event("mqtt_subscribed", timeout)


def start_in_thread(daemon: Any, timeout: float = 30.0) -> tuple[threading.Event, threading.Thread]:
    """Run a Daemon in a thread, as the demo does; returns (stop event, thread) once it is ready."""
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    assert daemon.ready.wait(timeout), "daemon not ready"
    return stop, thread
