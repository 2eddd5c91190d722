import json

import pytest

from lynx.contracts.decoder import GenerateRequest
from lynx.gateway.tenants import TenantRegistry, hash_key, parse_tenants


def test_keys_are_stored_hashed_and_authenticate(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    key = registry.add("acme")
    stored = (tmp_path / "tenants.json").read_text()
    assert key not in stored and hash_key(key) in stored
    assert registry.authenticate(key).id == "acme"
    assert registry.authenticate(key + "x") is None


def test_the_file_is_reread_when_it_changes(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    assert registry.authenticate("anything") is None
    first = registry.add("one")
    second = TenantRegistry(tmp_path / "tenants.json").add("two")
    assert registry.authenticate(first).id == "one"
    assert registry.authenticate(second).id == "two"
    assert registry.known_ids() == {"one", "two"}


def test_rotating_a_key_revokes_the_old_one(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    old = registry.add("acme")
    new = registry.add("acme")
    assert registry.authenticate(old) is None and registry.authenticate(new).id == "acme"


def test_malformed_hashes_are_refused():
    with pytest.raises(ValueError, match="64 hex"):
        parse_tenants(json.loads('{"tenants": [{"id": "x", "key_sha256": "plain-text-key"}]}'))


@pytest.mark.parametrize("tenant_id", ["", "x" * 129, " padded", "line\nbreak"])
def test_a_tenant_id_no_service_accepts_is_refused_when_added_and_when_read(tmp_path, tenant_id):
    registry = TenantRegistry(tmp_path / "tenants.json")
    with pytest.raises(ValueError, match="a tenant id has 1 to 128"):
        registry.add(tenant_id)
    with pytest.raises(ValueError, match="a tenant id has 1 to 128"):
        parse_tenants({"tenants": [{"id": tenant_id, "key_sha256": hash_key("k")}]})


def test_the_longest_tenant_id_reaches_the_decoder_contract(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    tenant = registry.authenticate(registry.add("t" * 128))
    assert GenerateRequest(input_ids=[1], tenant=tenant.id).tenant == tenant.id


def test_temporary_tenants_are_gone_after_the_run_even_a_failed_one(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    kept = registry.add("kept")
    with pytest.raises(RuntimeError), registry.temporary("run-1", "run-2") as keys:
        assert [registry.authenticate(key).id for key in keys] == ["run-1", "run-2"]
        raise RuntimeError("the run failed")
    assert registry.known_ids() == {"kept"} and registry.authenticate(kept).id == "kept"
    assert all(registry.authenticate(key) is None for key in keys)
