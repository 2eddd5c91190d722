"""A file that another process replaces while this one serves from it (the gateway's tenants file and its published
budget decisions): re-read when it changed, and the last good copy kept when a version cannot be read.

Writers replace these files whole (``lynx.service.files.write_atomically``), but a file edited by hand, truncated in place or
written by a broken deployment must not turn every request into a 500: the copy read last stays in force, the
``watched_file_unreadable`` log event says so once per bad version, and ``lynx_watched_file_stale{file}`` reads 1
until a good version arrives (docs/METRICS.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from lynx.telemetry.metrics import watched_file_metrics

log = logging.getLogger("lynx.service.watched_file")
Parsed = TypeVar("Parsed")
# A version of the file: a new inode means it was replaced by a rename, a new size or mtime that it was rewritten.
Stamp = tuple[int, int, int]


def stamp_of(stat: os.stat_result) -> Stamp:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class WatchedFile(Generic[Parsed]):
    """``value``: what ``parse`` made of the newest readable version of ``path``; ``absent`` while there is no file.

    ``parse`` takes the file's bytes and raises ValueError (pydantic's ValidationError is one) for content it refuses.
    ``name`` labels the metrics: a fixed name per kind of file, never a path. A file that does not exist means
    ``absent`` (no tenants, no budgets: its owner removed it); a file that exists but cannot be read or parsed keeps
    the last good value (``absent`` if none was ever read)."""

    def __init__(self, path: Path, name: str, parse: Callable[[bytes], Parsed], absent: Parsed) -> None:
        self.path = path
        self.name = name
        self.parse = parse
        self.absent = absent
        self.value: Parsed = absent
        self._stamp: Stamp | None = None
        self._metrics = watched_file_metrics()
        self._metrics.stale.labels(name).set(0)
        self._metrics.unreadable_versions.labels(name)  # reads 0, not "no data", until a bad version comes

    def refresh(self) -> bool:
        """Re-reads the file if it changed since the last call; whether ``value`` changed."""
        try:
            stamp = stamp_of(self.path.stat())
        except FileNotFoundError:
            changed = self.value is not self.absent
            self.value, self._stamp = self.absent, None
            self._metrics.stale.labels(self.name).set(0)
            return changed
        if stamp == self._stamp:
            return False
        try:
            with open(self.path, "rb") as file:
                # The stamp of the version read (the file may have been replaced since the stat above).
                stamp = stamp_of(os.fstat(file.fileno()))
                parsed = self.parse(file.read())
        except (OSError, ValueError) as error:
            self._stamp = stamp  # said once per bad version, not once per request
            self._unreadable(error)
            return False
        self.value, self._stamp = parsed, stamp
        self._metrics.stale.labels(self.name).set(0)
        return True

    def _unreadable(self, error: Exception) -> None:
        self._metrics.unreadable_versions.labels(self.name).inc()
        self._metrics.stale.labels(self.name).set(1)
        detail = (str(error).splitlines() or [""])[0][:200]
        log.error("watched_file_unreadable", extra={"fields": {
            "file": self.name, "path": str(self.path), "error": type(error).__name__, "detail": detail,
            "kept": "the last good version" if self.value is not self.absent else "nothing (none was read yet)"}})
