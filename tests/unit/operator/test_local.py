from datetime import UTC, datetime, timedelta

import pytest
import yaml
from prometheus_client import REGISTRY

from lynx.contracts.budgets import BudgetDecisions, BudgetSpec, TemporaryRaise
from lynx.service.errors import LynxError
from lynx.gateway.budgets import Budgets
from lynx.local.processes import free_port
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.local import FileStore, LocalBudgetSettings, LocalController, budget_or_default

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path) -> FileStore:
    return FileStore(tmp_path / "budgets.yaml", tmp_path / "state.json")


def controller(store: FileStore, tmp_path, **settings) -> LocalController:
    """Its Prometheus is a port nothing listens on: every spend read fails as it would with Prometheus down."""
    config = LocalBudgetSettings(budgets_file=store.path, state_file=store.state_file,
                                 decisions_file=tmp_path / "decisions.json",
                                 prometheus_url=f"http://127.0.0.1:{free_port()}", **settings)
    return LocalController(config, store, PrometheusClient(config.prometheus_url, 2), now=lambda: NOW)


def a_raise(hours_left: float) -> TemporaryRaise:
    return TemporaryRaise(amount_eur=0.5, expires_at=NOW + timedelta(hours=hours_left), reason="quarter close",
                          requested_by="alice", requested_at=NOW - timedelta(hours=1))


def test_the_store_keeps_one_budget_per_tenant(store):
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0))
    store.put(BudgetSpec(tenant="zeta", daily_cap_eur=2.0, timezone="Europe/Paris"))
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=3.0))
    assert [(s.tenant, s.daily_cap_eur) for s in store.list()] == [("acme", 3.0), ("zeta", 2.0)]
    assert store.get("zeta").timezone == "Europe/Paris" and store.get("nobody") is None
    assert yaml.safe_load(store.path.read_text())[1] == {"tenant": "zeta", "daily_cap_eur": 2.0,
                                                         "timezone": "Europe/Paris"}


def test_the_demo_budget_is_set_once_and_an_admins_change_stays(store):
    assert budget_or_default(store, "demo", 1.0).daily_cap_eur == 1.0
    store.put(BudgetSpec(tenant="demo", daily_cap_eur=5.0, paused=True))
    assert budget_or_default(store, "demo", 1.0) == BudgetSpec(tenant="demo", daily_cap_eur=5.0, paused=True)
    store.remove("demo")
    assert budget_or_default(store, "demo", 2.0).daily_cap_eur == 2.0 and len(store.list()) == 1


def test_a_run_publishes_what_the_gateway_enforces(store, tmp_path):
    store.put(BudgetSpec(tenant="open", daily_cap_eur=1.0))
    store.put(BudgetSpec(tenant="stopped", daily_cap_eur=1.0, paused=True, per_request_cap_eur=0.01))
    failures = REGISTRY.get_sample_value("lynx_budget_spend_read_failures_total") or 0.0
    published = controller(store, tmp_path, unknown_tenants="closed").run_once()
    on_disk = BudgetDecisions.model_validate_json((tmp_path / "decisions.json").read_text())
    assert on_disk == published and on_disk.source == "local" and on_disk.unknown_tenants == "closed"
    assert on_disk.tenants["open"].state == "Ok"  # spend unknown, unknown_spend open: the whole cap
    assert on_disk.tenants["stopped"].state == "Paused" and on_disk.tenants["stopped"].per_request_cap_eur == 0.01
    assert REGISTRY.get_sample_value("lynx_budget_spend_read_failures_total") == failures + 2
    assert not store.status("open").condition("PrometheusReachable").status

    gateway = Budgets(tmp_path / "decisions.json", now=NOW.timestamp)
    gateway.admit("open")
    for tenant in ("stopped", "stranger"):
        with pytest.raises(LynxError) as refused:
            gateway.admit(tenant)
        assert refused.value.status == 429


def test_expired_raises_leave_the_budgets_file(store, tmp_path):
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0, raises=[a_raise(-0.5), a_raise(5)]))
    decisions = controller(store, tmp_path).run_once()
    assert decisions.tenants["acme"].cap_eur == 1.5
    assert [r.expires_at for r in store.get("acme").raises] == [NOW + timedelta(hours=5)]
    assert [e.kind for e in store.status("acme").history].count("raise_expired") == 1


def test_the_last_status_is_kept_between_runs(store, tmp_path):
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0))
    controller(store, tmp_path, unknown_spend="closed").run_once()
    assert store.status("acme").state == "Blocked"
    again = controller(store, tmp_path, unknown_spend="open").run_once()
    assert again.tenants["acme"].state == "Blocked"  # an unknown spend never unblocks, whatever the setting now


def test_statuses_are_every_tenants_last_decision_at_once(store, tmp_path):
    assert store.statuses() == {} and store.status("acme") is None  # no run yet
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0, paused=True))
    store.put(BudgetSpec(tenant="zeta", daily_cap_eur=2.0))
    published = controller(store, tmp_path, unknown_spend="closed").run_once()
    statuses = store.statuses()
    assert set(statuses) == {"acme", "zeta"} == set(published.tenants)
    assert {t: s.state for t, s in statuses.items()} == {t: d.state for t, d in published.tenants.items()} \
        == {"acme": "Paused", "zeta": "Blocked"}
    assert all(statuses[tenant] == store.status(tenant) for tenant in statuses)
    assert store.remove("zeta") and set(controller(store, tmp_path).run_once().tenants) == set(store.statuses())


def test_a_removed_budget_stops_being_exported(store, tmp_path):
    store.put(BudgetSpec(tenant="gone", daily_cap_eur=1.0))
    loop = controller(store, tmp_path)
    decision = loop.run_once().tenants["gone"]
    assert REGISTRY.get_sample_value("lynx_budget_cap_eur", {"tenant": "gone"}) == 1.0
    # The alerts' resets_at: the tenant's next midnight, the one the gateway's 429 and headers announce.
    assert REGISTRY.get_sample_value("lynx_budget_reset_timestamp_seconds", {"tenant": "gone"}) \
        == decision.resets_at.timestamp() == datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    assert store.remove("gone") and not store.remove("gone")
    assert loop.run_once().tenants == {}
    assert REGISTRY.get_sample_value("lynx_budget_cap_eur", {"tenant": "gone"}) is None
    assert REGISTRY.get_sample_value("lynx_budget_reset_timestamp_seconds", {"tenant": "gone"}) is None
    assert REGISTRY.get_sample_value("lynx_budget_state", {"tenant": "gone", "state": "Ok"}) is None


def test_removing_one_budget_keeps_the_others(store):
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0))
    store.put(BudgetSpec(tenant="zeta", daily_cap_eur=2.0))
    assert store.remove("acme")
    assert [s.tenant for s in store.list()] == ["zeta"]
    assert not store.remove("nobody") and [s.tenant for s in store.list()] == ["zeta"]


def test_a_budget_removed_while_its_raise_expires_stays_removed(store):
    """The loop takes expired raises out of the file: it never writes back a budget an admin removed meanwhile."""
    store.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0, raises=[a_raise(-0.5)]))
    store.remove("acme")
    assert store.update("acme", lambda current: current and current.model_copy(update={"raises": []})) is None
    assert store.list() == []
