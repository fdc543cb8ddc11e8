"""Logging: structlog, JSON lines off a terminal (journald), a readable console renderer on one.

`RateLimitedLog` keeps hostile input from flooding the log: per reason, the first `burst` events of
each interval are logged in full, the rest only counted and reported in one summary line per interval.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the process. `fmt`: auto (json unless stderr is a tty) | json | console."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "edge_lstm") -> Any:
    return structlog.get_logger(name)


class RateLimitedLog:
    """Log at most `burst` events per key per `interval_s`; summarise the suppressed ones."""

    def __init__(
        self,
        log: Any,
        *,
        burst: int = 10,
        interval_s: float = 60.0,
        event: str = "rejected",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.burst = burst
        self.interval_s = interval_s
        self.event = event
        self.clock = clock
        self._window_start = clock()
        self._logged: dict[str, int] = defaultdict(int)
        self._suppressed: dict[str, int] = defaultdict(int)

    def __call__(self, key: str, **fields: Any) -> bool:
        """Log one event under `key` unless its burst is used up. Returns True when it was logged."""
        self.flush()
        if self._logged[key] < self.burst:
            self._logged[key] += 1
            self.log.warning(self.event, reason=key, **fields)
            return True
        self._suppressed[key] += 1
        return False

    def flush(self, force: bool = False) -> dict[str, int] | None:
        """At the end of an interval (or when forced), log the suppressed counts and start a new window."""
        now = self.clock()
        if not force and now - self._window_start < self.interval_s:
            return None
        suppressed = {k: v for k, v in self._suppressed.items() if v}
        if suppressed:
            self.log.warning(f"{self.event}_suppressed", counts=suppressed, window_s=round(now - self._window_start, 1))
        self._window_start = now
        self._logged.clear()
        self._suppressed.clear()
        return suppressed
