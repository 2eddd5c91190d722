"""What a local run started: its folder and the pid of each of its processes (pids.json), which `lynx up` and the
process building the missing observability tools both add to, and `lynx down` reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from lynx.files import locked, write_atomically
from lynx.settings import default_cache_dir


def run_dir() -> Path:
    return default_cache_dir() / "run"


def pids_file() -> Path:
    return run_dir() / "pids.json"


def recorded_pids() -> dict[str, int]:
    """Each recorded process's pid (its process group's id too: each is started in a session of its own)."""
    path = pids_file()
    return json.loads(path.read_text()) if path.exists() else {}


def record(started: Mapping[str, int]) -> None:
    """Adds ``started`` (name -> pid) to the run's record, under a lock: two processes of one run may record at
    once."""
    path = pids_file()
    with locked(path):
        write_atomically(path, json.dumps({**recorded_pids(), **started}))


def forget(names: Iterable[str]) -> None:
    """Drops ``names`` from the record; the record goes once it is empty."""
    path, gone = pids_file(), set(names)
    with locked(path):
        pids = {name: pid for name, pid in recorded_pids().items() if name not in gone}
        if pids:
            write_atomically(path, json.dumps(pids))
        else:
            path.unlink(missing_ok=True)
