"""systemd notification protocol (sd_notify(3)) without libsystemd: one datagram per message.

`$NOTIFY_SOCKET` names a Unix datagram socket; a leading `@` means the abstract namespace. Upstream
documents the protocol as stable and encourages reimplementing it. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Protocol


class Notify(Protocol):
    """What the daemon tells its service manager: `Notifier` (systemd), or a test's recorder
    (tests/support/fakes.FakeNotifier). Each call returns whether the message went out."""

    def ready(self, status: str = ...) -> bool: ...
    def status(self, status: str) -> bool: ...
    def stopping(self, status: str = ...) -> bool: ...
    def watchdog(self, now: float | None = None) -> bool: ...
    def close(self) -> None: ...


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):
            self.address = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self.address = addr
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Watchdog: ping at a third of the interval (systemd asks for less than half).
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError:
            return False  # systemd gone or socket full: never fatal

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> bool:
        """Ping if a third of the watchdog interval has passed since the last ping."""
        if self.watchdog_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_s / 3:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
