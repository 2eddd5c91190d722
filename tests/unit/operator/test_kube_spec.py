"""A BudgetSpec and the TenantBudget spec that stores it (lynx_budget.kube): each field, nested ones included, both
ways."""

from datetime import UTC, datetime, timedelta

from lynx.contracts.budgets import BudgetSpec, TemporaryRaise, UnreachableAllowance
from lynx_budget import kube

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def test_a_spec_with_every_field_survives_the_round_trip():
    spec = BudgetSpec(tenant="acme", daily_cap_eur=5.0, timezone="Europe/Paris", warning_percent=70, paused=True,
                      per_request_cap_eur=0.2, cheaper_near_cap=True,
                      unreachable_allowance=UnreachableAllowance(per_gateway_eur=0.05),
                      raises=[TemporaryRaise(amount_eur=1.0, requested_at=NOW, expires_at=NOW + timedelta(hours=2),
                                             reason="launch", requested_by="ops")])
    resource = kube.resource_spec(spec)
    assert resource["unreachableAllowance"] == {"perGatewayEUR": 0.05}
    assert kube.budget_spec(resource) == spec


def test_a_spec_without_an_allowance_stores_none():
    spec = BudgetSpec(tenant="acme", daily_cap_eur=5.0)
    assert "unreachableAllowance" not in kube.resource_spec(spec)
    assert kube.budget_spec(kube.resource_spec(spec)).unreachable_allowance is None
