"""The gateway's books for one tenant-day under a spend lease (lynx.gateway.leases.TenantLease): pure logic, and how a
refusal is reported. The channel to a real controller is tested in tests/integration/test_leases_across_gateways.py."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from lynx.contracts.leases import LeaseGrant, UnreachableAllowance
from lynx.gateway.leases import UNREACHABLE, LeaseKeeper, TenantLease
from lynx.service.errors import LynxError

DAY = datetime(2026, 12, 7, tzinfo=UTC)
SENT_AT = datetime(2026, 12, 7, 12, tzinfo=UTC)


def grant(lease: TenantLease, ceiling: float, outcome: str = "granted", lifetime: float = 30.0,
          allowance: UnreachableAllowance | None = None, sequence: int | None = None) -> LeaseGrant:
    return LeaseGrant(gateway="g", tenant=lease.tenant, day_started_at=DAY,
                      sequence=lease.sequence if sequence is None else sequence, lease_id=f"e-{lease.sequence}",
                      ceiling_eur=ceiling, granted_eur=max(ceiling - lease.keep_eur, 0.0), lifetime_seconds=lifetime,
                      expires_at=SENT_AT, outcome=outcome, state="Ok", reason="r", unreachable_allowance=allowance)


def leased(ceiling: float, sent: float = 100.0, **fields) -> TenantLease:
    lease = TenantLease("acme", DAY, **fields)
    lease.request("g", ceiling, sent, SENT_AT, 0.0)
    assert lease.accept(grant(lease, ceiling), sent)
    return lease


def test_a_request_fits_while_charged_reserved_and_its_worst_case_stay_under_the_ceiling():
    lease = leased(1.0, charged_eur=0.3, reserved_eur=0.2)
    assert lease.fits(0.5, 101.0)
    assert not lease.fits(0.5000001, 101.0)
    assert lease.headroom(101.0) == pytest.approx(0.5)


def test_nothing_fits_once_the_lease_has_run_out_counted_from_when_the_renewal_was_sent():
    lease = leased(1.0, sent=100.0)
    assert lease.fits(0.1, 129.9)
    assert not lease.fits(0.1, 130.0)
    assert lease.headroom(130.0) == 0.0


def test_an_answer_to_an_older_request_or_a_stale_one_is_ignored():
    lease = leased(1.0)
    lease.request("g", 1.0, 110.0, SENT_AT, 0.0)
    assert not lease.accept(grant(lease, 5.0, sequence=lease.sequence - 1), 110.0)
    assert not lease.accept(grant(lease, 5.0, outcome="stale"), 110.0)
    assert lease.ceiling_eur == 1.0


def test_the_request_declares_the_lease_it_acts_on_until_the_answer_arrives():
    lease = leased(1.0, charged_eur=0.25, reserved_eur=0.25)
    request = lease.request("g", 2.0, 105.0, SENT_AT, 0.001)
    assert (request.sequence, request.charged_eur, request.keep_eur, request.want_eur) == (2, 0.25, 0.5, 2.0)
    assert (request.acting_lease_id, request.acting_ceiling_eur) == ("e-1", 1.0)
    expired = lease.request("g", 2.0, 200.0, SENT_AT, 0.001)
    assert (expired.acting_lease_id, expired.acting_ceiling_eur) == (None, 0.0)


def test_a_lease_in_use_is_renewed_before_it_runs_out_and_an_idle_one_gives_back_its_headroom_once():
    busy = leased(1.0, sent=100.0)
    busy.in_flight = 1
    assert not busy.renewal_due(110.0)
    assert busy.renewal_due(116.0)
    idle = leased(1.0, sent=100.0)
    assert idle.renewal_due(116.0)  # headroom nobody uses goes back
    idle.request("g", 0.0, 116.0, SENT_AT, 0.0)
    idle.accept(grant(idle, 0.0), 116.0)
    assert not idle.renewal_due(140.0)  # nothing held beyond what it charged: nothing to give back


def test_the_tenants_allowance_applies_only_while_the_controller_cannot_be_reached():
    lease = TenantLease("acme", DAY)
    lease.request("g", 1.0, 100.0, SENT_AT, 0.0)
    lease.accept(grant(lease, 1.0, allowance=UnreachableAllowance(per_gateway_eur=0.5)), 100.0)
    assert lease.ceiling(200.0) == 0.0
    lease.unreachable = "ConnectError"
    assert lease.ceiling(200.0) == 0.5
    assert lease.ceiling(101.0) == 1.5


def test_a_refusal_for_want_of_a_lease_is_counted_and_logged_with_the_tenant_and_its_phase(tmp_path, caplog):
    """No token to renew with: the lease cannot grow, so the request is refused as the controller's being unreachable
    (before any connection: the token is read first)."""
    keeper = LeaseKeeper("http://127.0.0.1:9", tmp_path / "no-token", 0.001, 4, 0.5, 1.0)
    lease = keeper.lease("lessee", DAY, 1.0)

    def refused_count() -> float:
        labels = {"tenant": "lessee", "reason": "controller_unreachable"}
        return REGISTRY.get_sample_value("lynx_budget_refused_requests_total", labels) or 0.0

    before = refused_count()
    with caplog.at_level(logging.INFO, logger="lynx.gateway.budgets"):
        for replacing in (None, 0.001):
            with pytest.raises(LynxError) as refused:
                asyncio.run(keeper.admit(lease, 0.01, "a request", replacing=replacing))
            assert refused.value.status == 503 and refused.value.code == UNREACHABLE
    asyncio.run(keeper.aclose())
    events = [r.fields for r in caplog.records if r.getMessage() == "request_refused"]
    assert [(e["tenant"], e["reason"], e["phase"], e["status"]) for e in events] == [
        ("lessee", "controller_unreachable", "admission", 503), ("lessee", "controller_unreachable", "reservation", 503)]
    assert refused_count() == before + 2
