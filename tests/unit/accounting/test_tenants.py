import json

import pytest

from lynx.contracts.decoder import GenerateRequest
from lynx.service.files import write_atomically
from lynx.accounting.tenants import TenantRegistry, hash_key, parse_tenants, read_tenants


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


@pytest.mark.parametrize("content", ['[]', '{"tenants": 3}', '{"tenants": [{"id": "x"}]}', '{"tenants": ["x"]}', '7'])
def test_a_document_of_another_shape_is_refused_as_a_value_error(content):
    with pytest.raises(ValueError, match="a tenants file holds"):
        read_tenants(content)


def test_a_broken_file_keeps_the_tenants_read_last(tmp_path):
    path = tmp_path / "tenants.json"
    registry = TenantRegistry(path)
    key = registry.add("acme")
    assert registry.authenticate(key).id == "acme"  # read once, as a gateway serving it has
    good = path.read_text()
    write_atomically(path, '{"tenants": [{"id": "acme"')
    assert registry.authenticate(key).id == "acme" and registry.known_ids() == {"acme"}
    write_atomically(path, good)
    newcomer = TenantRegistry(path).add("newcomer")
    assert registry.authenticate(newcomer).id == "newcomer"


def test_adding_to_a_broken_file_is_refused_and_leaves_it_as_it_is(tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"tenants.json is not a tenants file .*: fix it or remove it"):
        TenantRegistry(path).add("acme")
    assert path.read_text() == "{not json"


def test_a_keys_fingerprint_is_held_by_its_tenant_until_the_key_is_replaced(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    key = registry.add("acme")
    fingerprint = hash_key(key)[:16]
    assert registry.holds_key("acme", fingerprint)
    assert not registry.holds_key("globex", fingerprint) and not registry.holds_key("acme", "")
    registry.add("acme")
    assert not registry.holds_key("acme", fingerprint)
