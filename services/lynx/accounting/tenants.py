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
from lynx.service.files import locked, write_atomically
from lynx.service.watched_file import WatchedFile

KEY_PREFIX = "lynx-"


@dataclass(frozen=True)
class Tenant:
    id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


TENANTS_FILE_SHAPE = '{"tenants": [{"id": ..., "key_sha256": ...}, ...]}'


def parse_tenants(document: object) -> dict[str, Tenant]:
    """{key_sha256: Tenant} from ``{"tenants": [{"id": ..., "key_sha256": ...}]}``; ValueError for anything else."""
    entries = document.get("tenants", []) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"id", "key_sha256"} <= e.keys()
                                                for e in entries):
        raise ValueError(f"a tenants file holds {TENANTS_FILE_SHAPE}")
    by_hash: dict[str, Tenant] = {}
    for entry in entries:
        digest = str(entry["key_sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"tenant {entry.get('id')!r}: key_sha256 must be 64 hex characters")
        if problem := tenant_id_error(str(entry["id"])):
            raise ValueError(problem)
        by_hash[digest] = Tenant(id=str(entry["id"]))
    return by_hash


def read_tenants(content: bytes | str) -> dict[str, Tenant]:
    """A tenants file's content; ValueError (JSONDecodeError is one) when it is not one."""
    return parse_tenants(json.loads(content))


class TenantRegistry:
    """Looks keys up by hash; re-reads the file when it changes, so tenants can be added live. A file that cannot be
    read keeps the tenants read last (``lynx.service.watched_file``); a missing file means no tenants."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = WatchedFile(path, "tenants", read_tenants, absent={})

    def _by_hash(self) -> dict[str, Tenant]:
        """{key_sha256: Tenant} as the file says now."""
        self._file.refresh()
        return self._file.value

    def authenticate(self, key: str) -> Tenant | None:
        digest = hash_key(key)
        for known, tenant in self._by_hash().items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    def holds_key(self, tenant_id: str, fingerprint: str) -> bool:
        """Whether ``tenant_id`` still has a key whose hash starts with ``fingerprint`` (a non-empty prefix)."""
        return bool(fingerprint) and any(
            known.startswith(fingerprint) and tenant.id == tenant_id for known, tenant in self._by_hash().items())

    def known_ids(self) -> set[str]:
        return {t.id for t in self._by_hash().values()}

    def stored_ids(self) -> set[str]:
        """The ids the file holds now, for the tools that change it: ValueError when it cannot be read (a gateway,
        which must go on serving, asks ``known_ids``)."""
        return {t.id for t in parse_tenants(self._document()).values()}

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
            document = self._document()
            document["tenants"] = change(document.get("tenants", []))
            write_atomically(self.path, json.dumps(document, indent=2) + "\n", mode=0o600)

    def _document(self) -> dict:
        """The file's document, checked: a broken file is refused, never overwritten with what could be read of it."""
        if not self.path.exists():
            return {"tenants": []}
        try:
            document = json.loads(self.path.read_text())
            parse_tenants(document)
        except ValueError as problem:
            raise ValueError(f"{self.path} is not a tenants file ({problem}): fix it or remove it; it holds "
                             f"{TENANTS_FILE_SHAPE}") from None
        return document
