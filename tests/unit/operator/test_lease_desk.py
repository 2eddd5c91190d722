"""The lease desk: the ledger persisted before each answer, continued after a restart, rebuilt after a loss, and the
tenant it finds unable to pay for a request published Blocked."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from lynx.contracts.budgets import BudgetSpec
from lynx.contracts.leases import LeaseGrant, LeaseRequest
from lynx.local.processes import free_port
from lynx.service.errors import LynxError
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.lease_desk import BEFORE_LEASES, BEFORE_RESTART, LeaseDesk, LedgerFile, proofs_before_restart
from lynx_budget.leases import LeaseLedger, LeaseTerms, holdings_eur, rebuild, renew
from lynx_budget.local import FileStore, LocalBudgetSettings, LocalController, lease_desk
from lynx_budget.policy import SpendReading

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
TODAY = datetime(2026, 6, 10, tzinfo=UTC)
TERMS = LeaseTerms(lifetime_seconds=30, longest_request_seconds=20, smallest_request_eur=0.001)
TOKEN = "s3cret-token"


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path) -> FileStore:
    files = FileStore(tmp_path / "budgets.yaml", tmp_path / "state.json")
    files.put(BudgetSpec(tenant="acme", daily_cap_eur=1.0))
    return files


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_desk(store: FileStore, clock: Clock) -> LeaseDesk:
    return LeaseDesk.open(LedgerFile(store.path.with_name("leases.json")), store.state_file.exists(), TOKEN, TERMS, store.get,
                          store.list, now=clock)


def ask(sequence: int = 1, gateway: str = "g1", want: float = 0.4, charged: float = 0.0, keep: float | None = None,
        tenant: str = "acme", day: datetime = TODAY, smallest: float = 0.0, acting: LeaseGrant | None = None
        ) -> LeaseRequest:
    return LeaseRequest(gateway=gateway, tenant=tenant, day_started_at=day, sequence=sequence, sent_at=NOON,
                        charged_eur=charged, keep_eur=charged if keep is None else keep, want_eur=want,
                        smallest_request_eur=smallest, acting_lease_id=acting.lease_id if acting else None,
                        acting_ceiling_eur=acting.ceiling_eur if acting else 0.0)


def answer(desk: LeaseDesk, request: LeaseRequest) -> LeaseGrant:
    return asyncio.run(desk.answer(request))


def on_disk(desk: LeaseDesk) -> LeaseLedger:
    return LeaseLedger.model_validate_json(desk.copy.path.read_text())


def test_a_cache_dir_that_never_granted_grants_at_once_and_saves_each_answer_before_it(store, clock):
    desk = open_desk(store, clock)
    assert desk.copy.path.exists() and not desk.ledger.needs_rebuild  # saved at start: a restart continues it
    grant = answer(desk, ask(want=0.4))
    assert (grant.outcome, grant.ceiling_eur, grant.lease_id) == ("granted", 0.4, f"{desk.ledger.epoch}-1")
    assert on_disk(desk) == desk.ledger
    assert REGISTRY.get_sample_value("lynx_budget_lease_held_eur", {"tenant": "acme"}) == 0.4


def test_what_a_tenant_spent_before_its_first_lease_today_is_held_as_charged(store, clock):
    """A budget set after the tenant had spent: the ledger starts its day from the spend Prometheus last had."""
    desk = open_desk(store, clock)
    spec = store.get("acme")
    desk.inform(spec, SpendReading(0.3, NOON), NOON)
    grant = answer(desk, ask(want=1.0))
    assert grant.ceiling_eur == pytest.approx(0.7)
    assert desk.ledger.day("acme", TODAY).gateways[BEFORE_LEASES].charged_eur == 0.3
    desk.inform(spec, SpendReading(0.5, NOON), NOON)  # later readings include the gateways' charges: not added
    assert answer(desk, ask(sequence=2, gateway="g2", want=1.0)).outcome == "exhausted"
    assert holdings_eur(desk.ledger, "acme", TODAY) == pytest.approx(1.0)


def test_a_rebuilding_ledger_takes_no_spend_from_before_leases_its_rebuild_holds_it_already(store, clock):
    store.save_statuses({})
    desk = LeaseDesk.open(LedgerFile(store.path.with_name("leases.json")), True, TOKEN, TERMS, store.get, store.list,
                          now=clock)
    desk.inform(store.get("acme"), SpendReading(0.6, NOON), NOON)
    assert answer(desk, ask(want=1.0)).outcome == "rebuilding"
    day = desk.ledger.day("acme", TODAY)
    assert day is None or BEFORE_LEASES not in day.gateways  # else the rebuild's before-restart counts it twice


def test_an_answer_that_cannot_be_saved_is_not_given_and_changes_nothing(store, clock):
    desk = open_desk(store, clock)
    answer(desk, ask(gateway="other", want=0.1))
    before = desk.ledger
    desk.copy.path.unlink()
    desk.copy.path.mkdir()  # replacing a directory fails, for root too
    (desk.copy.path / "keep").touch()
    with pytest.raises(LynxError) as refused:
        answer(desk, ask(want=0.4))
    assert refused.value.status == 503 and refused.value.code == "lease_ledger_unwritable"
    assert refused.value.headers["Retry-After"] == "5" and str(desk.copy.path) in refused.value.message
    assert desk.ledger is before and desk.ledger.day("acme", TODAY).gateways.keys() == {"other"}

    shutil.rmtree(desk.copy.path)
    grant = answer(desk, ask(want=0.4))  # the same request, never applied, is granted once the file can be written
    assert (grant.outcome, grant.lease_id) == ("granted", f"{desk.ledger.epoch}-2") and on_disk(desk) == desk.ledger


def test_a_restarted_desk_continues_the_saved_ledger(store, clock):
    first = open_desk(store, clock)
    grant = answer(first, ask(want=0.4))
    restarted = open_desk(store, clock)
    assert restarted.ledger == first.ledger and not restarted.ledger.needs_rebuild
    assert answer(restarted, ask(want=0.4)) == grant  # the same request again: the same answer
    renewed = answer(restarted, ask(sequence=2, want=0.4, charged=0.1, acting=grant))
    assert renewed.lease_id == f"{first.ledger.epoch}-2" and renewed.ceiling_eur == pytest.approx(0.5)


def test_a_lost_ledger_grants_nothing_until_rebuilt(store, clock):
    store.save_statuses({})  # the loop ran here: leases may have been granted
    desk = open_desk(store, clock)
    assert desk.ledger.needs_rebuild and desk.ledger.grants_from == NOON + timedelta(seconds=50)
    grant = answer(desk, ask(want=0.4, charged=0.05, keep=0.1))
    assert (grant.outcome, grant.granted_eur, grant.ceiling_eur) == ("rebuilding", 0.0, 0.1)

    unreachable = PrometheusClient(f"http://127.0.0.1:{free_port()}", 1)
    clock.now = NOON + timedelta(seconds=51)
    asyncio.run(desk.upkeep(unreachable))  # today's spend cannot be read: it stays rebuilding
    assert desk.ledger.needs_rebuild and on_disk(desk).needs_rebuild
    assert answer(desk, ask(sequence=2, want=0.4, charged=0.05, keep=0.1, acting=grant)).outcome == "rebuilding"
    unreachable.close()


def test_failing_open_a_lost_ledger_is_rebuilt_from_the_last_spend_kept_when_prometheus_cannot_say(store, clock):
    store.save_statuses({})
    desk = LeaseDesk.open(LedgerFile(store.path.with_name("leases.json")), True, TOKEN, TERMS, store.get, store.list, now=clock,
                          last_spent=lambda tenant, day: 0.3)
    unreachable = PrometheusClient(f"http://127.0.0.1:{free_port()}", 1)
    asyncio.run(desk.upkeep(unreachable))
    assert desk.ledger.needs_rebuild  # not before every earlier lease has expired and charged
    clock.now = NOON + timedelta(seconds=51)
    asyncio.run(desk.upkeep(unreachable))
    unreachable.close()
    assert not desk.ledger.needs_rebuild and not on_disk(desk).needs_rebuild
    grant = answer(desk, ask(want=1.0))
    assert (grant.outcome, grant.ceiling_eur) == ("granted", pytest.approx(0.7))  # the kept 0.3 is held as spent


def test_a_cache_dir_from_before_leases_starts_a_fresh_ledger_and_one_that_granted_waits(store, tmp_path):
    """State kept but no token yet: nothing was ever granted from here (an upgrade), so nothing is waited out."""
    store.save_statuses({})
    settings = LocalBudgetSettings(budgets_file=store.path, state_file=store.state_file,
                                   leases_file=tmp_path / "leases.json", lease_token_file=tmp_path / "token")
    assert not lease_desk(settings, store).ledger.needs_rebuild
    settings.leases_file.unlink()  # the token exists now: a ledger lost from here may have granted leases
    assert lease_desk(settings, store).ledger.needs_rebuild


def test_a_corrupt_ledger_is_set_aside_and_treated_as_lost(store, clock):
    (store.path.with_name("leases.json")).write_text('{"epoch": "e", "issued": "many"')
    desk = open_desk(store, clock)
    assert desk.ledger.needs_rebuild and answer(desk, ask()).outcome == "rebuilding"
    aside = list(store.path.parent.glob("leases.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"epoch": "e", "issued": "many"'


def test_the_spend_before_a_restart_is_held_on_top_of_what_gateways_report_after():
    """Conservative: a gateway's cumulative report includes what the Prometheus reading already counted."""
    spec = BudgetSpec(tenant="acme", daily_cap_eur=1.0)
    ledger = LeaseLedger.without_copy("e2", NOON, TERMS)
    as_of = ledger.grants_from
    proofs = proofs_before_restart([spec], {"acme": 0.3}, as_of)
    assert [(p.tenant, p.day_started_at, p.gateway, p.charged_eur) for p in proofs] == [
        ("acme", TODAY, BEFORE_RESTART, 0.3)]
    rebuilt = rebuild(ledger, proofs, as_of, TERMS)
    _, grant = renew(rebuilt, spec, ask(want=1.0, charged=0.3), as_of, TERMS)
    assert grant.outcome == "granted" and grant.ceiling_eur == pytest.approx(0.7)  # 0.3 counted twice
    assert holdings_eur(rebuilt, "acme", TODAY) == pytest.approx(0.3)


def test_the_token_and_the_budget_are_required(store, clock):
    desk = open_desk(store, clock)
    desk.authenticate(f"Bearer {TOKEN}")
    for header in (None, "", f"Basic {TOKEN}", "Bearer wrong", f"Bearer {TOKEN}x"):
        with pytest.raises(LynxError) as refused:
            desk.authenticate(header)
        assert refused.value.status == 401 and refused.value.code == "invalid_lease_token"
    with pytest.raises(LynxError) as refused:
        answer(desk, ask(tenant="nobody"))
    assert (refused.value.status, refused.value.code, refused.value.param) == (404, "no_budget", "tenant")
    assert "'nobody' has no budget" in refused.value.message


def test_old_tenant_days_are_forgotten_and_the_file_follows(store, clock):
    desk = open_desk(store, clock)
    three_days_ago = TODAY - timedelta(days=3)
    assert answer(desk, ask(day=three_days_ago, charged=0.2)).outcome == "other_day"
    answer(desk, ask(day=TODAY - timedelta(days=1), charged=0.2))
    asyncio.run(desk.upkeep(PrometheusClient(f"http://127.0.0.1:{free_port()}", 1)))
    assert {d.day_started_at for d in desk.ledger.days} == {TODAY - timedelta(days=1)} == \
        {d.day_started_at for d in on_disk(desk).days}


def controller(store: FileStore, desk: LeaseDesk, clock: Clock) -> LocalController:
    """Spend cannot be read (nothing listens on its Prometheus port): spend alone leaves the tenant Ok."""
    config = LocalBudgetSettings(budgets_file=store.path, state_file=store.state_file,
                                 decisions_file=store.path.with_name("decisions.json"),
                                 prometheus_url=f"http://127.0.0.1:{free_port()}")
    return LocalController(config, store, PrometheusClient(config.prometheus_url, 1), now=clock, desk=desk)


def test_while_prometheus_cannot_say_the_decision_takes_the_spend_the_gateways_confirmed(store, clock):
    desk = open_desk(store, clock)
    answer(desk, ask(want=0.0, charged=0.85))
    acme = controller(store, desk, clock).run_once().tenants["acme"]
    assert (acme.state, acme.spent_eur) == ("Warning", pytest.approx(0.85))


def test_a_remainder_that_cannot_pay_the_smallest_request_is_blocked_and_audited(store, clock):
    store.put(BudgetSpec(tenant="calm", daily_cap_eur=1.0, paused=True))
    desk = open_desk(store, clock)
    loop = controller(store, desk, clock)
    assert loop.run_once().tenants["acme"].state == "Ok"
    # One gateway has 0.5 of the 1.0 cap in flight at worst case: not Blocked, the requests usually cost less.
    assert answer(desk, ask(want=0.0, charged=0.5, keep=0.9995, smallest=0.002)).state == "Ok"
    assert loop.run_once().tenants["acme"].state == "Ok"
    # They settled at 0.9995 in all; its cheapest request costs 0.002 (above the 0.001 floor).
    grant = answer(desk, ask(sequence=2, want=0.0, charged=0.9995, smallest=0.002))
    assert grant.state == "Blocked"
    published = loop.run_once()
    acme = published.tenants["acme"]
    assert (acme.state, acme.remaining_eur) == ("Blocked", 0.0)
    assert "0.0005 EUR" in acme.reason and "smallest request (0.002 EUR)" in acme.reason
    assert store.status("acme").history[-1].message.startswith("Ok -> Blocked: acme has 0.0005 EUR")
    assert published.tenants["calm"].state == "Paused"  # paused stays paused

    assert REGISTRY.get_sample_value("lynx_budget_lease_confirmed_eur", {"tenant": "acme"}) == 0.9995
    assert REGISTRY.get_sample_value("lynx_budget_lease_held_eur", {"tenant": "acme"}) == 0.9995


def test_a_lapsed_lease_keeps_holding_while_prometheus_cannot_prove_what_it_spent(store, clock):
    desk = open_desk(store, clock)
    answer(desk, ask(want=0.4, charged=0.1))
    clock.now = NOON + TERMS.lifetime + TERMS.settled_after + timedelta(minutes=5)  # expired and settled: awaits proof
    unreachable = PrometheusClient(f"http://127.0.0.1:{free_port()}", 1)
    asyncio.run(desk.upkeep(unreachable))
    unreachable.close()
    assert holdings_eur(desk.ledger, "acme", TODAY) == 0.5 == holdings_eur(on_disk(desk), "acme", TODAY)
