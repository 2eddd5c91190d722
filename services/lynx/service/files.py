"""Files that several processes read and write (the tenants file, the budgets file): replaced whole, so a reader
sees the old file or the new one and never half of one, and changed under a lock, so two writers never lose each
other's change."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """Replaces ``path`` with ``text``; with ``mode``, the file has it from its first byte (a private file is never
    readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(handle, mode)
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path``'s lock file (``<path>.lock``) while the block reads and rewrites it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def shared_token(path: Path) -> str:
    """The secret two processes share to authenticate a channel (the gateways' spend leases): the token in ``path``,
    made there first (private, random) by whichever process comes first. In Kubernetes the file is a mounted
    Secret and already exists."""
    if not path.exists():  # made once, then only read: a mounted Secret's folder is read-only, no lock file there
        with locked(path):
            if not path.exists():
                write_atomically(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty: it must hold the token the gateways and the budget controller share")
    return token
