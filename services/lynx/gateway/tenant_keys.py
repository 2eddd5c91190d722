"""The API keys of the tenants made on this machine (`lynx up`'s demo tenant, `lynx tenant add`), kept so that they
can be shown again: the tenants file holds only their hashes.

They stay in a private file beside it (mode 0600: ``tenants.json`` -> ``tenants.keys.json``). A kept key counts only
while the tenants file still holds its hash, so a key replaced or removed by other means (`lynx load`, a test, an
edited file) is never shown as one that works.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lynx.service.files import locked, write_atomically
from lynx.accounting.tenants import TenantRegistry
from lynx.option_errors import CommandRefused


class TenantProblem(CommandRefused, LookupError):
    """What was asked of a tenant cannot be done; the message says what to do instead."""


def keys_file(tenants_file: Path) -> Path:
    return tenants_file.with_name(f"{tenants_file.stem}.keys.json")


class LocalTenants:
    """The tenants file and the keys kept beside it, changed together."""

    def __init__(self, tenants_file: Path) -> None:
        self.registry = TenantRegistry(tenants_file)
        self.keys_file = keys_file(tenants_file)

    def exists(self, tenant: str) -> bool:
        try:
            return tenant in self.registry.stored_ids()
        except ValueError as problem:  # a broken tenants file: said, never taken for one without the tenant
            raise TenantProblem(str(problem)) from None

    def kept_key(self, tenant: str) -> str | None:
        """The tenant's kept key, if the tenants file still accepts it."""
        key = self._kept().get(tenant)
        found = self.registry.authenticate(key) if key else None
        return key if found is not None and found.id == tenant else None

    def key_or_new(self, tenant: str) -> str:
        """The tenant's kept key, or a new one (a new tenant, or a key no longer kept): `lynx up`'s demo tenant keeps
        its key from one run to the next."""
        return self.kept_key(tenant) or self.rotate(tenant)

    def add(self, tenant: str) -> str:
        if self.exists(tenant):
            raise TenantProblem(f"tenant {tenant!r} exists already: `lynx tenant show {tenant}` prints its key, "
                                f"`lynx tenant rotate {tenant}` replaces it")
        return self.rotate(tenant)

    def show(self, tenant: str) -> str:
        key = self.kept_key(tenant)
        if key is not None:
            return key
        if not self.exists(tenant):
            raise TenantProblem(f"no tenant {tenant!r} in {self.registry.path}: `lynx tenant add {tenant}` creates it")
        raise TenantProblem(f"the key of tenant {tenant!r} is not kept on this machine (the tenants file holds only "
                            f"its hash): `lynx tenant rotate {tenant}` gives it a new one")

    def rotate(self, tenant: str) -> str:
        """A new key for the tenant (created if need be): the old one stops working in every gateway reading the file."""
        try:
            key = self.registry.add(tenant)
        except ValueError as problem:
            raise TenantProblem(str(problem)) from None
        self._change(lambda kept: {**kept, tenant: key})
        return key

    def remove(self, tenant: str) -> None:
        if not self.exists(tenant):
            raise TenantProblem(f"no tenant {tenant!r} in {self.registry.path}")
        self.registry.remove(tenant)
        self._change(lambda kept: {name: key for name, key in kept.items() if name != tenant})

    def _kept(self) -> dict[str, str]:
        return json.loads(self.keys_file.read_text()) if self.keys_file.exists() else {}

    def _change(self, change: Callable[[dict[str, str]], dict[str, str]]) -> None:
        with locked(self.keys_file):
            write_atomically(self.keys_file, json.dumps(change(self._kept()), indent=2) + "\n", mode=0o600)
