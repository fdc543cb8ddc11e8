"""A progress line on stderr for long offline runs (`replay`): shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import TextIO


class ProgressReader:
    """Wraps a text file for `csv`: counts the characters read and redraws one line at most twice a
    second, `replay: 42 % (1,234,567 rows)`. `total`: the file's size in bytes (characters ≈ bytes)."""

    def __init__(self, f: TextIO, total: int, *, out: TextIO = sys.stderr, every_s: float = 0.5) -> None:
        self.f, self.total, self.out, self.every_s = f, max(total, 1), out, every_s
        self.read = 0
        self.lines = 0
        self._last = time.monotonic()

    def readline(self) -> str:
        line = self.f.readline()
        self._count(line)
        return line

    def __iter__(self) -> Iterator[str]:
        for line in self.f:
            self._count(line)
            yield line

    def _count(self, line: str) -> None:
        self.read += len(line)
        self.lines += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            pct = min(100, 100 * self.read // self.total)
            self.out.write(f"\rreplay: {pct:3d} % ({self.lines:,} rows)")
            self.out.flush()

    def done(self) -> None:
        self.out.write("\r" + " " * 40 + "\r")
        self.out.flush()
