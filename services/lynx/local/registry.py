"""What a local run started: its folder and the pid of each of its processes (pids.json), which `lynx up` and the
process building the missing observability tools both add to, and `lynx down` reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from lynx.service.files import locked, write_atomically
from lynx.service.settings import default_cache_dir


def run_dir() -> Path:
    return default_cache_dir() / "run"


def pids_file(folder: Path | None = None) -> Path:
    """The record of the run in ``folder`` (default: `lynx up`'s)."""
    return (folder or run_dir()) / "pids.json"


def recorded_pids(folder: Path | None = None) -> dict[str, int]:
    """Each recorded process's pid (its process group's id too: each is started in a session of its own)."""
    path = pids_file(folder)
    return json.loads(path.read_text()) if path.exists() else {}


def record(started: Mapping[str, int], folder: Path | None = None) -> None:
    """Adds ``started`` (name -> pid) to the run's record, replacing a restarted process's old pid, under a lock:
    two processes of one run may record at once."""
    path = pids_file(folder)
    with locked(path):
        write_atomically(path, json.dumps({**recorded_pids(folder), **started}))


def forget(names: Iterable[str], folder: Path | None = None) -> None:
    """Drops ``names`` from the record; the record goes once it is empty."""
    path, gone = pids_file(folder), set(names)
    with locked(path):
        pids = {name: pid for name, pid in recorded_pids(folder).items() if name not in gone}
        if pids:
            write_atomically(path, json.dumps(pids))
        else:
            path.unlink(missing_ok=True)
