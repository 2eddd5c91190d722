"""The keys kept for tenants made on this machine: shown again while they work, and only then."""

from __future__ import annotations

import stat

import pytest

from lynx.gateway.tenant_keys import LocalTenants, TenantProblem, keys_file
from lynx.accounting.tenants import TenantRegistry


@pytest.fixture
def tenants(tmp_path) -> LocalTenants:
    return LocalTenants(tmp_path / "tenants.json")


def test_the_demo_key_is_the_same_at_every_start(tenants, tmp_path):
    first = tenants.key_or_new("demo")
    again = LocalTenants(tmp_path / "tenants.json").key_or_new("demo")
    assert again == first and TenantRegistry(tmp_path / "tenants.json").authenticate(first).id == "demo"


def test_kept_keys_are_private_and_beside_the_tenants_file(tenants, tmp_path):
    key = tenants.add("acme")
    kept = keys_file(tmp_path / "tenants.json")
    assert kept == tmp_path / "tenants.keys.json" and key in kept.read_text()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tenants.json").stat().st_mode) == 0o600
    assert key not in (tmp_path / "tenants.json").read_text()


def test_show_rotate_and_remove(tenants, tmp_path):
    old = tenants.add("acme")
    assert tenants.show("acme") == old
    new = tenants.rotate("acme")
    registry = TenantRegistry(tmp_path / "tenants.json")
    assert new != old and tenants.show("acme") == new
    assert registry.authenticate(old) is None and registry.authenticate(new).id == "acme"
    tenants.remove("acme")
    assert registry.authenticate(new) is None and "acme" not in keys_file(tmp_path / "tenants.json").read_text()
    with pytest.raises(TenantProblem, match="lynx tenant add acme"):
        tenants.show("acme")


def test_adding_an_existing_tenant_is_refused_rather_than_rotating_its_key(tenants):
    key = tenants.add("acme")
    with pytest.raises(TenantProblem, match="lynx tenant rotate acme"):
        tenants.add("acme")
    assert tenants.show("acme") == key


def test_a_key_replaced_by_other_means_is_never_shown(tenants, tmp_path):
    """Another tool gave the tenant a new key: the kept one no longer works, so `lynx up` makes a new one."""
    kept = tenants.key_or_new("demo")
    elsewhere = TenantRegistry(tmp_path / "tenants.json").add("demo")
    with pytest.raises(TenantProblem, match="lynx tenant rotate demo"):
        tenants.show("demo")
    fresh = tenants.key_or_new("demo")
    assert fresh not in (kept, elsewhere) and tenants.show("demo") == fresh


def test_removing_a_tenant_keeps_the_others(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    keys = {name: registry.add(name) for name in ("a", "b", "c")}
    registry.remove("a", "c")
    assert registry.known_ids() == {"b"} and registry.authenticate(keys["b"]).id == "b"


def test_a_tenant_id_too_long_is_refused_in_one_sentence_and_nothing_is_written(tenants, tmp_path):
    with pytest.raises(TenantProblem, match="a tenant id has 1 to 128 printable characters"):
        tenants.add("x" * 129)
    assert not (tmp_path / "tenants.json").exists() and not keys_file(tmp_path / "tenants.json").exists()


@pytest.mark.parametrize("command", ["add", "show", "rotate", "remove"])
def test_every_command_on_a_broken_tenants_file_says_so_and_leaves_it(tmp_path, command):
    path = tmp_path / "tenants.json"
    path.write_text("{broken")
    with pytest.raises(TenantProblem, match=r"tenants.json is not a tenants file .*: fix it or remove it"):
        getattr(LocalTenants(path), command)("acme")
    assert path.read_text() == "{broken"
