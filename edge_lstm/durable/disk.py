"""The disk port's adapter: every write the durable state makes goes through a `Disk`
(edge_lstm/ports.py), so that a full SD card can be injected in tests (`ENOSPC` from `write`) and the
daemon's answer to it (serve on, not durable: docs/durability.md, "A full disk") checked without one.

Files are created 0600 and directories 0700 whatever the process umask: stream ids, states and readings
are nobody else's business on a shared Pi.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


class OsDisk:
    """The real file system (POSIX)."""

    def create(self, path: Path) -> int:
        """A new, empty file for writing (truncated if it exists), mode 0600."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT
        return fd

    def open_append(self, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> None:
        """All of `data`, or OSError (a short write on a full disk is retried until it fails)."""
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        # A rename is durable only once the directory entry is on disk.
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def free_bytes(self, directory: Path) -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize


def private_dir(directory: Path) -> None:
    """Create `directory` (and parents) and make it 0700, and every file in it 0600 (state directories
    written by earlier versions were 0755 / 0644)."""
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(directory, DIR_MODE)
    for p in directory.iterdir():
        if p.is_file() and not p.is_symlink() and (p.stat().st_mode & 0o777) != FILE_MODE:
            os.chmod(p, FILE_MODE)
