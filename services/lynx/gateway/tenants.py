"""Tenants and their API keys. Keys are stored and compared only as SHA-256 hashes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lynx.contracts.limits import tenant_id_error
from lynx.files import locked, write_atomically

KEY_PREFIX = "lynx-"


@dataclass(frozen=True)
class Tenant:
    id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def parse_tenants(document: dict) -> dict[str, Tenant]:
    """{key_sha256: Tenant} from ``{"tenants": [{"id": ..., "key_sha256": ...}]}``."""
    by_hash: dict[str, Tenant] = {}
    for entry in document.get("tenants", []):
        digest = str(entry["key_sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"tenant {entry.get('id')!r}: key_sha256 must be 64 hex characters")
        if problem := tenant_id_error(str(entry["id"])):
            raise ValueError(problem)
        by_hash[digest] = Tenant(id=str(entry["id"]))
    return by_hash


class TenantRegistry:
    """Looks keys up by hash; re-reads the file when it changes, so tenants can be added live."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._by_hash: dict[str, Tenant] = {}

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._by_hash, self._stamp = {}, None
            return
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a new inode: the file was replaced
        if stamp != self._stamp:
            self._by_hash = parse_tenants(json.loads(self.path.read_text()))
            self._stamp = stamp

    def authenticate(self, key: str) -> Tenant | None:
        self._refresh()
        digest = hash_key(key)
        for known, tenant in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    def known_ids(self) -> set[str]:
        self._refresh()
        return {t.id for t in self._by_hash.values()}

    def add(self, tenant_id: str) -> str:
        """Create a tenant with a fresh key, or give it a new one (its old key stops working at once in every gateway
        that reads the file); returns the key (shown once, stored only hashed). ValueError for an id no service would
        accept."""
        if problem := tenant_id_error(tenant_id):
            raise ValueError(problem)
        key = new_key()
        self._rewrite(lambda tenants: [*(t for t in tenants if t["id"] != tenant_id),
                                       {"id": tenant_id, "key_sha256": hash_key(key)}])
        return key

    def remove(self, *tenant_ids: str) -> None:
        """Takes the tenants out of the file: their keys stop working in every gateway that reads it."""
        self._rewrite(lambda tenants: [t for t in tenants if t["id"] not in tenant_ids])

    @contextlib.contextmanager
    def temporary(self, *tenant_ids: str) -> Iterator[tuple[str, ...]]:
        """Tenants a tool makes for its run (`lynx load`, `lynx chaos`): their keys, and the tenants gone afterwards,
        whatever ends the run."""
        try:
            yield tuple(self.add(tenant_id) for tenant_id in tenant_ids)
        finally:
            self.remove(*tenant_ids)

    def _rewrite(self, change: Callable[[list[dict]], list[dict]]) -> None:
        """Changes the file's tenants under a lock (`lynx up`, `lynx load`, `lynx tenant` may write it at once) and
        replaces it whole (a gateway re-reading it never sees half of it)."""
        with locked(self.path):
            document = json.loads(self.path.read_text()) if self.path.exists() else {"tenants": []}
            document["tenants"] = change(document["tenants"])
            write_atomically(self.path, json.dumps(document, indent=2) + "\n", mode=0o600)
