"""Logging: structlog, JSON lines off a terminal (journald), a readable console renderer on one.

When stderr is the journal (systemd sets `JOURNAL_STREAM` to its `device:inode`), each line starts with
its sd-daemon priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug): journald strips the prefix
and files the line at that priority (SyslogLevelPrefix=, on by default), so `journalctl -p warning` works.

`RateLimitedLog` keeps hostile input from flooding the log: per reason, the first `burst` events of
each interval are logged in full, the rest only counted and reported in one summary line per interval.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


# sd-daemon(3) priorities of structlog's level names (add_log_level: "exception" is "error").
PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is connected to the journal: `JOURNAL_STREAM` ("device:inode", set by systemd
    for a service's stdout/stderr) names the stream's file. Inherited by a child whose stderr goes
    elsewhere, it does not match, so the check is on the file itself, as systemd.exec(5) advises."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):  # unset/garbled, or a stream without a file (tests)
        return False


class PriorityPrefix:
    """Wraps a renderer: `<N>` + the rendered line, N the sd-daemon priority of the event's level."""

    def __init__(self, renderer: Callable[..., str | bytes]) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        level = event_dict.get("level", method_name)
        line = self.renderer(logger, method_name, event_dict)
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        return f"<{PRIORITIES.get(level, 6)}>{line}"


class LastProblem:
    """Remembers the last warning or error logged: the stats' `last_error` (Home Assistant's "Last
    error" entity), so a problem shows where people look without reading the journal."""

    def __init__(self) -> None:
        self.text = ""  # "<UTC time> <level> <event>", "" until the first one

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        level = event_dict.get("level", method_name)
        if level in ("warning", "error", "critical", "exception"):
            when = str(event_dict.get("timestamp", ""))[:19]
            self.text = f"{when}Z {level} {event_dict.get('event', '')}"[:255]  # HA states: 255 characters
        return event_dict


LAST_PROBLEM = LastProblem()


def configure(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *, journal: bool | None = None
) -> None:
    """Configure structlog for the process. `fmt`: auto (json unless stderr is a tty) | json | console.
    `journal`: prefix lines with their priority (default: when `stream` is the journal, `is_journal`)."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    if journal is None:
        journal = is_journal(out)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        LAST_PROBLEM,
    ]
    renderer: Callable[..., str | bytes]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    processors.append(PriorityPrefix(renderer) if journal else renderer)
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
