"""The spend-lease ledger: each rule on an example, then a randomized simulation against an independent tally.

The simulation plays gateways that admit requests only within their leases, a lossy network between them and the
controller, gateway deaths, controller restarts with and without a persisted ledger, raises, pauses and midnights.
Its tally is its own record of every charge each gateway made; it checks at every step that what the gateways
committed stays within the cap but for the recorded estimate overruns, that the ledger never loses sight of a
lease a gateway acts on, and at the end that every cent charged is in the ledger once reported or proven.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from lynx.contracts.budgets import BudgetSpec, TemporaryRaise
from lynx.contracts.leases import LeaseGrant, LeaseRequest, UnreachableAllowance
from lynx_budget.leases import (
    LeaseLedger,
    LeaseTerms,
    Proof,
    awaiting_proof,
    cannot_pay_smallest,
    confirmed_eur,
    forget_days_before,
    holding_eur,
    holdings_eur,
    prove,
    rebuild,
    remainder_eur,
    renew,
    tenant_state,
    unreachable_overshoot_eur,
)
from lynx_budget.policy import day_window

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
TODAY = datetime(2026, 6, 10, tzinfo=UTC)
SECOND = timedelta(seconds=1)
TERMS = LeaseTerms(lifetime_seconds=30, longest_request_seconds=20, smallest_request_eur=0.01)
EPS = 1e-9


def spec(**fields) -> BudgetSpec:
    return BudgetSpec(**{"tenant": "acme", "daily_cap_eur": 1.0, **fields})


def ask(gateway: str = "g1", sequence: int = 1, charged: float = 0.0, keep: float | None = None, want: float = 0.4,
        acting: LeaseGrant | None = None, acting_ceiling: float | None = None, day: datetime = TODAY,
        at: datetime = NOON, acting_id: str | None = None) -> LeaseRequest:
    return LeaseRequest(
        gateway=gateway, tenant="acme", day_started_at=day, sequence=sequence, sent_at=at, charged_eur=charged,
        keep_eur=charged if keep is None else keep, want_eur=want,
        acting_lease_id=acting.lease_id if acting else acting_id,
        acting_ceiling_eur=(acting.ceiling_eur if acting else 0.0) if acting_ceiling is None else acting_ceiling)


def account(ledger: LeaseLedger, gateway: str, day: datetime = TODAY):
    return ledger.day("acme", day).gateways[gateway]


# --- the rules, one example each ---------------------------------------------------------------------------------

def test_a_gateway_gets_what_it_wants_and_the_next_only_what_is_left():
    ledger, first = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.7), NOON, TERMS)
    assert (first.outcome, first.ceiling_eur, first.granted_eur) == ("granted", 0.7, 0.7)
    assert first.expires_at == NOON + 30 * SECOND and first.lifetime_seconds == 30
    ledger, second = renew(ledger, spec(), ask("g2", want=0.7), NOON, TERMS)
    assert second.ceiling_eur == pytest.approx(0.3)
    ledger, third = renew(ledger, spec(), ask("g3", want=0.7), NOON, TERMS)
    assert (third.outcome, third.ceiling_eur) == ("exhausted", 0.0)
    assert holdings_eur(ledger, "acme", TODAY) == pytest.approx(1.0)


def test_what_float_rounding_leaves_of_a_cap_held_in_full_is_not_granted():
    ledger, _ = renew(LeaseLedger(epoch="e"), spec(daily_cap_eur=0.9), ask("g1", want=0.2), NOON, TERMS)
    ledger, _ = renew(ledger, spec(daily_cap_eur=0.9), ask("g2", want=0.9), NOON, TERMS)  # granted 0.9 - 0.2
    assert 0.9 - (0.2 + (0.9 - 0.2)) > 0  # what the sums leave: 1.1e-16
    ledger, third = renew(ledger, spec(daily_cap_eur=0.9), ask("g3", want=0.7), NOON, TERMS)
    assert (third.outcome, third.granted_eur) == ("exhausted", 0.0)


def test_a_want_smaller_than_the_rounding_guard_is_granted_when_the_cap_has_room():
    """Requests of a tenant can be that cheap (an estimate of 3e-16 EUR): the guard is on what is free, not wanted."""
    _, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=2.4e-15), NOON, TERMS)
    assert (grant.outcome, grant.granted_eur) == ("granted", 2.4e-15)


def test_the_ceiling_never_falls_below_what_the_gateway_must_keep():
    ledger, _ = renew(LeaseLedger(epoch="e"), spec(), ask("g2", want=1.0), NOON, TERMS)
    ledger, grant = renew(ledger, spec(), ask("g1", charged=0.1, keep=0.25, want=0.5), NOON, TERMS)
    assert (grant.outcome, grant.ceiling_eur, grant.granted_eur) == ("exhausted", 0.25, 0.0)
    assert holdings_eur(ledger, "acme", TODAY) == pytest.approx(1.25)  # in flight before the lease: still held


def test_given_back_budget_is_free_once_the_gateway_acts_on_the_smaller_lease():
    ledger, big = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.9), NOON, TERMS)
    ledger, small = renew(ledger, spec(), ask("g1", 2, charged=0.1, keep=0.1, want=0.1, acting=big), NOON, TERMS)
    assert small.ceiling_eur == pytest.approx(0.2)
    # Until g1 names the smaller lease it may still admit up to 0.9 under the big one.
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.9)
    ledger, _ = renew(ledger, spec(), ask("g1", 3, charged=0.1, keep=0.1, want=0.1, acting=small), NOON, TERMS)
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.2)
    ledger, other = renew(ledger, spec(), ask("g2", want=1.0), NOON, TERMS)
    assert other.ceiling_eur == pytest.approx(0.8)


def test_a_gateway_may_give_back_at_once_by_declaring_a_lower_acting_ceiling():
    ledger, big = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.9), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 2, want=0.0, acting=big, acting_ceiling=0.3), NOON, TERMS)
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.3)


def test_a_lost_answer_leaves_the_older_lease_held_and_the_lost_one_dead_once_a_newer_request_arrives():
    ledger, first = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.2), NOON, TERMS)
    ledger, lost = renew(ledger, spec(), ask("g1", 2, want=0.6, acting=first), NOON, TERMS)
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.6)  # the answer may yet arrive
    ledger, _ = renew(ledger, spec(), ask("g1", 3, want=0.0, acting=first), NOON + SECOND, TERMS)
    # g1 never saw `lost` (it ignores answers to older requests now): only `first` and the new 0-lease hold.
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.2)
    assert lost.lease_id not in {lease.lease_id for lease in account(ledger, "g1").leases}


def test_a_repeated_request_gets_the_same_answer_and_an_older_one_is_stale():
    ledger, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", 2, want=0.5), NOON, TERMS)
    again_ledger, again = renew(ledger, spec(), ask("g1", 2, want=0.5), NOON + 5 * SECOND, TERMS)
    assert again == grant and again_ledger == ledger
    _, old = renew(ledger, spec(), ask("g1", 1, want=0.9), NOON, TERMS)
    assert (old.outcome, old.granted_eur) == ("stale", 0.0)


def test_reports_are_cumulative_so_a_late_smaller_one_changes_nothing():
    ledger, _ = renew(LeaseLedger(epoch="e"), spec(), ask("g1", 2, charged=0.3, want=0.1), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 1, charged=0.1, want=0.1), NOON, TERMS)
    assert account(ledger, "g1").charged_eur == 0.3


def test_charges_beyond_the_ceiling_are_held_as_charged():
    ledger, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.2), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 2, charged=0.26, want=0.0, acting=grant), NOON, TERMS)
    assert holding_eur(account(ledger, "g1")) == pytest.approx(0.26)


def test_an_unrenewed_lease_holds_its_whole_ceiling_until_proof_after_its_requests_have_ended():
    ledger, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.5), NOON, TERMS)
    much_later = NOON + timedelta(hours=3)
    assert holdings_eur(ledger, "acme", TODAY) == 0.5  # expired, never renewed: counted as fully spent
    assert remainder_eur(ledger, spec(), much_later) == pytest.approx(0.5)
    too_early = grant.expires_at + TERMS.settled_after - SECOND  # a request admitted last may still be running
    early = prove(ledger, Proof("acme", TODAY, "g1", 0.12, too_early), TERMS)
    assert holding_eur(account(early, "g1")) == 0.5 and account(early, "g1").charged_eur == 0.12
    proven = prove(ledger, Proof("acme", TODAY, "g1", 0.12, grant.expires_at + TERMS.settled_after), TERMS)
    assert holding_eur(account(proven, "g1")) == 0.12
    assert confirmed_eur(proven, "acme", TODAY) == 0.12


def test_a_lease_awaits_proof_once_its_deadline_and_the_longest_request_have_passed_and_not_after_proof():
    ledger, first = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.3), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g2", want=0.3), NOON + 10 * SECOND, TERMS)
    settles = first.expires_at + TERMS.settled_after
    assert awaiting_proof(ledger, settles - SECOND, TERMS) == {}  # expired, but a request it admitted may still run
    assert awaiting_proof(ledger, settles, TERMS) == {("acme", TODAY, "g1"): settles}
    later = settles + 10 * SECOND
    assert awaiting_proof(ledger, later, TERMS) == {("acme", TODAY, "g1"): settles, ("acme", TODAY, "g2"): later}
    proven = prove(ledger, Proof("acme", TODAY, "g1", 0.05, settles), TERMS)
    assert awaiting_proof(proven, later, TERMS).keys() == {("acme", TODAY, "g2")}


def test_a_renewed_lease_does_not_await_proof_while_its_gateway_acts_on_the_newer_one():
    ledger, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.3), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 2, charged=0.1, acting=grant), NOON + 20 * SECOND, TERMS)
    # The first lease, still declared acting, is held with the new one until both have settled.
    assert awaiting_proof(ledger, grant.expires_at + TERMS.settled_after, TERMS) == {
        ("acme", TODAY, "g1"): grant.expires_at + TERMS.settled_after}
    ledger, _ = renew(ledger, spec(), ask("g1", 3, charged=0.1), NOON + 25 * SECOND, TERMS)  # acting on nothing now
    assert awaiting_proof(ledger, grant.expires_at + TERMS.settled_after, TERMS) == {}


def test_a_persisted_ledger_continues_exactly():
    ledger, first = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.5), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g2", want=0.2), NOON, TERMS)
    restored = LeaseLedger.model_validate_json(ledger.model_dump_json())
    assert restored == ledger
    later = ask("g1", 2, charged=0.2, keep=0.3, want=0.5, acting=first)
    assert renew(restored, spec(), later, NOON + SECOND, TERMS) == renew(ledger, spec(), later, NOON + SECOND, TERMS)


def test_a_controller_without_its_ledger_grants_nothing_until_earlier_leases_are_over_and_counted():
    started = NOON
    ledger = LeaseLedger.without_copy("e2", started, TERMS)
    assert ledger.grants_from == started + 50 * SECOND
    ledger, grant = renew(ledger, spec(), ask("g1", 7, charged=0.3, keep=0.35, want=0.2), started + SECOND, TERMS)
    assert (grant.outcome, grant.ceiling_eur) == ("rebuilding", 0.35)
    with pytest.raises(ValueError, match="at or after"):
        rebuild(ledger, [], started + 49 * SECOND, TERMS)
    as_of = started + 50 * SECOND
    ledger = rebuild(ledger, [Proof("acme", TODAY, "g1", 0.3, as_of), Proof("acme", TODAY, "g0", 0.4, as_of)],
                     as_of, TERMS)
    # g1's no-growth lease from the rebuilding period (0.35) is not over yet, g0 (dead) is proven at 0.4.
    assert holdings_eur(ledger, "acme", TODAY) == pytest.approx(0.75)
    ledger, grant = renew(ledger, spec(), ask("g1", 8, charged=0.3, want=1.0, acting=grant), as_of, TERMS)
    assert grant.outcome == "granted" and grant.ceiling_eur == pytest.approx(0.6)


def test_a_lease_named_by_a_gateway_but_unknown_to_the_ledger_is_held_for_a_whole_lifetime():
    ledger = LeaseLedger.without_copy("e2", NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 3, charged=0.1, want=0.0, acting_ceiling=0.6, acting_id="e1-9"),
                      NOON, TERMS)
    assert holding_eur(account(ledger, "g1")) == 0.6
    as_of = NOON + 50 * SECOND
    ledger = rebuild(ledger, [Proof("acme", TODAY, "g1", 0.1, as_of)], as_of, TERMS)
    assert holding_eur(account(ledger, "g1")) == 0.1  # expired at NOON + 30 s, its requests over 20 s later


def test_an_expired_raise_shrinks_the_cap_and_holdings_never_grow_until_they_fit_again():
    raise_ = TemporaryRaise(amount_eur=1.0, requested_at=NOON - SECOND, expires_at=NOON + 20 * SECOND,
                            reason="quarter end", requested_by="ops")
    raised = spec(raises=[raise_])
    ledger, g1 = renew(LeaseLedger(epoch="e"), raised, ask("g1", want=1.5), NOON, TERMS)
    assert g1.ceiling_eur == 1.5
    after = NOON + 21 * SECOND  # the raise is over, g1's lease is not: 1.5 held against a cap of 1.0
    ledger, g2 = renew(ledger, raised, ask("g2", want=0.1), after, TERMS)
    assert (g2.outcome, g2.ceiling_eur) == ("exhausted", 0.0)
    # g1 may trade its lease for one that fits beside the others' (0 + 1.0 <= 1.0); until it names the new
    # one it may still act on 1.5, so the holdings stay where they were, no higher.
    ledger, g1b = renew(ledger, raised, ask("g1", 2, charged=0.6, keep=0.7, want=0.5, acting=g1), after, TERMS)
    assert (g1b.outcome, g1b.ceiling_eur) == ("granted", pytest.approx(1.0))
    assert holdings_eur(ledger, "acme", TODAY) == 1.5
    ledger, g1c = renew(ledger, raised, ask("g1", 3, charged=0.7, want=0.0, acting=g1b), after, TERMS)
    assert holdings_eur(ledger, "acme", TODAY) == pytest.approx(1.0)
    ledger, _ = renew(ledger, raised, ask("g1", 4, charged=0.7, want=0.0, acting=g1c), after, TERMS)
    ledger, g2 = renew(ledger, raised, ask("g2", 2, want=0.5), after, TERMS)
    assert g2.ceiling_eur == pytest.approx(0.3)


def test_nothing_is_granted_to_a_paused_tenant():
    _, grant = renew(LeaseLedger(epoch="e"), spec(paused=True), ask("g1", charged=0.1, keep=0.2), NOON, TERMS)
    assert (grant.outcome, grant.ceiling_eur, grant.state) == ("paused", 0.2, "Paused")


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"])
def test_a_new_tenant_day_starts_empty_and_the_old_one_only_records(timezone):
    yesterday_start, today_start = (day_window(timezone, NOON - timedelta(days=1))[0], day_window(timezone, NOON)[0])
    budget = spec(timezone=timezone)
    ledger, old = renew(LeaseLedger(epoch="e"), budget, ask("g1", want=0.9, day=yesterday_start),
                        today_start - SECOND, TERMS)
    assert old.ceiling_eur == 0.9
    ledger, new = renew(ledger, budget, ask("g1", want=0.9, day=today_start), today_start + SECOND, TERMS)
    assert new.ceiling_eur == 0.9  # yesterday's lease holds against yesterday's cap only
    ledger, late = renew(ledger, budget, ask("g1", 2, charged=0.5, want=0.3, day=yesterday_start),
                         today_start + 2 * SECOND, TERMS)
    assert (late.outcome, late.ceiling_eur) == ("other_day", 0.5)
    assert confirmed_eur(ledger, "acme", yesterday_start) == 0.5
    assert [d.day_started_at for d in forget_days_before(ledger, today_start).days] == [today_start]


def test_a_tenant_whose_remainder_cannot_pay_the_smallest_request_is_blocked():
    ledger, grant = renew(LeaseLedger(epoch="e"), spec(), ask("g1", want=0.5), NOON, TERMS)
    # The lease is handed out but unused: it can still be spent through g1.
    assert tenant_state(ledger, spec(), NOON, TERMS) == "Ok" and not cannot_pay_smallest(ledger, spec(), NOON, TERMS)
    ledger, _ = renew(ledger, spec(), ask("g1", 2, charged=0.985, want=0.0, acting=grant), NOON, TERMS)
    assert remainder_eur(ledger, spec(), NOON) == pytest.approx(0.015)
    assert tenant_state(ledger, spec(), NOON, TERMS) == "Warning"
    ledger, _ = renew(ledger, spec(), ask("g1", 3, charged=0.992, want=0.0, acting=grant), NOON, TERMS)
    assert tenant_state(ledger, spec(), NOON, TERMS) == "Blocked"  # 0.008 left, the cheapest request costs 0.01


def test_the_unreachable_allowance_bounds_the_overshoot_at_n_times_the_allowance():
    assert unreachable_overshoot_eur(4, None) == 0.0
    assert unreachable_overshoot_eur(3, UnreachableAllowance(per_gateway_eur=0.05)) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="negative"):
        unreachable_overshoot_eur(-1, None)
    allowance = UnreachableAllowance(per_gateway_eur=0.05)
    _, grant = renew(LeaseLedger(epoch="e"), spec(), ask(), NOON, TERMS, allowance)
    assert grant.unreachable_allowance == allowance


@pytest.mark.parametrize(("fields", "message"), [
    ({"charged_eur": 0.3, "keep_eur": 0.2}, "cannot be below"),
    ({"acting_ceiling_eur": 0.2}, "acting_lease_id"),
    ({"want_eur": -1}, "greater than or equal"),
    ({"sequence": 0}, "greater than or equal"),
])
def test_a_malformed_request_is_refused_with_what_to_fix(fields, message):
    with pytest.raises(ValidationError, match=message):
        LeaseRequest(**{**ask().model_dump(), **fields})


# --- the simulation -----------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York", "Pacific/Auckland"]
BASE_CAP = 0.3  # a cap a few dozen requests exhaust: it binds in most seeds


@dataclass
class Flight:
    day: datetime
    worst: float
    actual: float
    ends_at: datetime


@dataclass
class GatewayDay:
    """One simulated gateway's own books for one tenant-day: the truth the ledger is checked against."""

    charged: float = 0.0
    reserved: float = 0.0
    overrun: float = 0.0
    in_flight: int = 0
    sequence: int = 0
    sent: dict[int, tuple[datetime, float]] = field(default_factory=dict)  # sequence -> (sent at, charged then)
    waiting_since: datetime | None = None
    lease_id: str | None = None
    ceiling: float = 0.0
    deadline: datetime | None = None
    acknowledged: float = 0.0  # charged as of the request whose answer arrived


@dataclass
class SimGateway:
    name: str
    alive: bool = True
    proof_never: bool = False
    days: dict[datetime, GatewayDay] = field(default_factory=dict)
    flights: list[Flight] = field(default_factory=list)


@dataclass
class Message:
    deliver_at: datetime
    payload: LeaseRequest | LeaseGrant


class Simulation:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.timezone = self.rng.choice(ZONES)
        midnight = day_window(self.timezone, NOON + timedelta(days=self.rng.randint(0, 300)))[1]
        self.now = midnight - timedelta(minutes=self.rng.uniform(0, 25))
        self.terms = LeaseTerms(lifetime_seconds=self.rng.choice([10, 30]), longest_request_seconds=20,
                                smallest_request_eur=0.005)
        self.raises: list[TemporaryRaise] = []
        self.paused = False
        self.gateways = [SimGateway(f"gw{i}") for i in range(self.rng.randint(2, 4))]
        self.network: list[Message] = []
        self.restarts = 0
        self.ledger = LeaseLedger(epoch="e0")  # nothing was ever granted before the simulation starts
        self.persisted = self.ledger.model_dump_json()
        self.cap_high: dict[datetime, float] = {}
        self.stats = dict.fromkeys(["granted", "exhausted", "paused", "rebuilding", "other_day", "stale", "grants",
                                    "overruns", "rollovers", "blind_restarts", "restarts", "proofs", "raises", "lost",
                                    "dead"], 0)

    # the independent tally's own view of the cap: base + raises not yet expired
    def cap(self) -> float:
        return BASE_CAP + sum(r.amount_eur for r in self.raises if r.expires_at > self.now)

    def spec(self) -> BudgetSpec:
        return BudgetSpec(tenant="acme", daily_cap_eur=BASE_CAP, timezone=self.timezone, paused=self.paused,
                          raises=list(self.raises))

    def today(self) -> datetime:
        return day_window(self.timezone, self.now)[0]

    # --- gateways
    def admit(self, gateway: SimGateway) -> None:
        day = self.today()
        books = gateway.days.setdefault(day, GatewayDay())
        worst = self.rng.uniform(0.005, 0.05)
        live = books.deadline is not None and self.now < books.deadline
        if not live or books.charged + books.reserved + worst > books.ceiling:
            return  # refused: the lease does not cover it
        slower = self.rng.random() < 0.04  # a decoder slower than its estimate: the one way past a worst case
        actual = worst * (self.rng.uniform(1.0, 1.4) if slower else self.rng.uniform(0.05, 1.0))
        books.reserved += worst
        books.in_flight += 1
        gateway.flights.append(Flight(day, worst, actual, self.now + timedelta(
            seconds=self.rng.uniform(0.2, self.terms.longest_request_seconds))))

    def settle(self, gateway: SimGateway, flight: Flight) -> None:
        books = gateway.days[flight.day]
        books.in_flight -= 1
        books.reserved = books.reserved - flight.worst if books.in_flight else 0.0
        books.charged += flight.actual
        books.overrun += max(flight.actual - flight.worst, 0.0)
        self.stats["overruns"] += flight.actual > flight.worst

    def settle_due(self) -> None:
        for gateway in self.gateways:
            due = [f for f in gateway.flights if f.ends_at <= self.now]
            gateway.flights = [f for f in gateway.flights if f.ends_at > self.now]
            for flight in due:
                self.settle(gateway, flight)

    def maybe_renew(self, gateway: SimGateway) -> None:
        for day, books in gateway.days.items():
            if books.waiting_since is not None and self.now - books.waiting_since < 3 * SECOND:
                continue
            today = day == self.today()
            live = books.deadline is not None and self.now < books.deadline and today
            headroom = books.ceiling - books.charged - books.reserved if live else 0.0
            if today:
                due = (not live or headroom < 0.05 or books.deadline - self.now < self.terms.lifetime / 3
                       or self.rng.random() < 0.05)
            else:
                due = (books.in_flight or books.acknowledged < books.charged) and self.rng.random() < 0.3
            if due:
                self.send_renewal(gateway, day, books, live)

    def send_renewal(self, gateway: SimGateway, day: datetime, books: GatewayDay, live: bool, final: bool = False
                     ) -> None:
        acting_ceiling = books.ceiling if live else 0.0
        if live and not final and self.rng.random() < 0.1:  # give back at once what it does not need
            acting_ceiling = min(books.ceiling, max(books.charged + books.reserved,
                                                    books.ceiling * self.rng.uniform(0.3, 1.0)))
            books.ceiling = acting_ceiling
        books.sequence += 1
        books.sent[books.sequence] = (self.now, books.charged)
        books.waiting_since = self.now
        want = 0.0 if final or day != self.today() else self.rng.choice([0.0, 0.02, 0.05, 0.1, 0.2])
        request = LeaseRequest(
            gateway=gateway.name, tenant="acme", day_started_at=day, sequence=books.sequence, sent_at=self.now,
            charged_eur=books.charged, keep_eur=books.charged + books.reserved, want_eur=want,
            acting_lease_id=books.lease_id if live else None, acting_ceiling_eur=acting_ceiling)
        self.post(request, lossless=final)

    def receive(self, gateway: SimGateway, grant: LeaseGrant) -> None:
        books = gateway.days.get(grant.day_started_at)
        if not gateway.alive or books is None or grant.sequence != books.sequence or grant.outcome == "stale":
            return  # only the answer to its latest request counts
        books.lease_id, books.ceiling = grant.lease_id, grant.ceiling_eur
        sent_at, books.acknowledged = books.sent[grant.sequence]
        books.deadline = sent_at + timedelta(seconds=grant.lifetime_seconds)
        books.waiting_since = None

    # --- network and controller
    def post(self, payload: LeaseRequest | LeaseGrant, lossless: bool = False) -> None:
        if not lossless and self.rng.random() < 0.1:
            self.stats["lost"] += 1
            return
        copies = 2 if not lossless and self.rng.random() < 0.08 else 1
        for _ in range(copies):
            delay = self.rng.uniform(0, 2) if self.rng.random() < 0.9 else self.rng.uniform(5, 45)
            self.network.append(Message(self.now + timedelta(seconds=delay), payload))

    def deliver(self, everything: bool = False) -> None:
        due = [m for m in self.network if m.deliver_at <= self.now and (everything or self.rng.random() < 0.7)]
        self.rng.shuffle(due)
        for message in due:
            self.network.remove(message)
            if isinstance(message.payload, LeaseRequest):
                self.answer(message.payload)
            else:
                self.receive(next(g for g in self.gateways if g.name == message.payload.gateway), message.payload)

    def answer(self, request: LeaseRequest) -> None:
        spec, cap = self.spec(), self.cap()
        before = self.ledger.day("acme", request.day_started_at)
        account_before = before.gateways.get(request.gateway) if before else None
        held_before = holding_eur(account_before) if account_before else 0.0
        known = {lease.lease_id for lease in account_before.leases} if account_before else set()
        total_before = holdings_eur(self.ledger, "acme", request.day_started_at)
        self.ledger, grant = renew(self.ledger, spec, request, self.now, self.terms)
        self.persisted = self.ledger.model_dump_json()  # write-ahead: persisted before the answer leaves
        held_after = holding_eur(self.ledger.day("acme", request.day_started_at).gateways[request.gateway])
        others = holdings_eur(self.ledger, "acme", request.day_started_at, but=request.gateway)
        # What it spent, must still charge, or acts on under a lease the ledger lost in a restart: not a new grant.
        unknown = request.acting_ceiling_eur if request.acting_lease_id not in known else 0.0
        reported = max(request.keep_eur, request.charged_eur, unknown)
        if account_before is not None and request.sequence == account_before.sequence:
            assert grant == account_before.last_grant  # a repeated request: the same answer, nothing new granted
        elif grant.granted_eur > 0:
            self.stats["grants"] += 1
            assert not self.paused and not self.ledger.needs_rebuild and request.day_started_at == self.today()
            assert others + grant.ceiling_eur <= cap + EPS, "a grant does not fit beside the other gateways' holdings"
            assert held_after <= max(held_before, reported, cap - others) + EPS
        else:  # nothing granted: this gateway's holding grows only by what it reports it charged or must keep
            assert held_after <= max(held_before, reported) + EPS
        total_after = holdings_eur(self.ledger, "acme", request.day_started_at)
        assert total_after <= max(total_before, cap) + max(reported - held_before, 0.0) + EPS
        self.stats[grant.outcome] = self.stats.get(grant.outcome, 0) + 1
        self.post(grant)

    def restart_controller(self) -> None:
        self.restarts += 1
        if self.rng.random() < 0.5:
            restored = LeaseLedger.model_validate_json(self.persisted)
            assert restored == self.ledger
            self.ledger = restored
            self.stats["restarts"] += 1
        else:
            self.ledger = LeaseLedger.without_copy(f"e{self.restarts}", self.now, self.terms)
            self.stats["blind_restarts"] += 1
        self.persisted = self.ledger.model_dump_json()

    def counters(self) -> list[Proof]:
        """What Prometheus holds: every gateway process's own charged figure per tenant-day, dead ones included."""
        return [Proof("acme", day, g.name, books.charged, self.now) for g in self.gateways
                for day, books in g.days.items()]

    def rebuild_when_allowed(self) -> None:
        if self.ledger.needs_rebuild and self.now >= self.ledger.grants_from:
            self.ledger = rebuild(self.ledger, self.counters(), self.now, self.terms)
            self.persisted = self.ledger.model_dump_json()

    def prove_some(self) -> None:
        candidates = [g for g in self.gateways if not g.proof_never]
        if not candidates:
            return
        gateway = self.rng.choice(candidates)
        for day, books in gateway.days.items():
            self.ledger = prove(self.ledger, Proof("acme", day, gateway.name, books.charged, self.now), self.terms)
            self.stats["proofs"] += 1
        self.persisted = self.ledger.model_dump_json()

    def kill_gateway(self) -> None:
        alive = [g for g in self.gateways if g.alive]
        if len(alive) < 2:
            return
        gateway = self.rng.choice(alive)
        for flight in gateway.flights:  # what it admitted ends with it, charged by its counter
            self.settle(gateway, flight)
        gateway.flights, gateway.alive = [], False
        gateway.proof_never = self.rng.random() < 0.3
        self.gateways.append(SimGateway(f"gw{len(self.gateways)}"))
        self.stats["dead"] += 1

    def add_raise(self) -> None:
        self.stats["raises"] += 1
        amount = round(self.rng.uniform(0.03, 0.2), 3)
        self.raises.append(TemporaryRaise(
            amount_eur=amount, requested_at=self.now, expires_at=self.now + timedelta(seconds=self.rng.uniform(20, 400)),
            reason="simulated", requested_by="sim"))

    # --- the checks
    def acts_on(self, gateway: SimGateway, day: datetime, books: GatewayDay) -> bool:
        """Whether the gateway admits under its lease for that day now (only today's, only until its deadline)."""
        return gateway.alive and day == self.today() and books.deadline is not None and self.now < books.deadline

    def check_invariants(self) -> None:
        today = self.today()
        self.cap_high[today] = max(self.cap_high.get(today, 0.0), self.cap())
        for day in {day for g in self.gateways for day in g.days}:
            books = [(g, g.days[day]) for g in self.gateways if day in g.days]
            # What the gateways may spend, by their own books: what they committed, or the lease they admit under.
            may_spend = sum(max(b.charged + b.reserved, b.ceiling if self.acts_on(g, day, b) else 0.0)
                            for g, b in books)
            overrun = sum(b.overrun for _, b in books)
            assert may_spend <= self.cap_high[day] + overrun + EPS, (
                f"gateways may spend {may_spend} of a cap of at most {self.cap_high[day]} (+{overrun} overruns)")
        if self.ledger.needs_rebuild:
            return  # leases granted before the restart are unknown, and nothing is granted until they are over
        for gateway in self.gateways:
            for day, books in gateway.days.items():
                day_ledger = self.ledger.day("acme", day)
                held = holding_eur(day_ledger.gateways[gateway.name]) if day_ledger and \
                    gateway.name in day_ledger.gateways else 0.0
                if self.acts_on(gateway, day, books):
                    assert held >= books.ceiling - EPS, f"{gateway.name} acts on {books.ceiling}, ledger holds {held}"
                # What it charged or may still charge, its own estimate overruns aside, is never let go of.
                assert held >= books.charged + books.reserved - books.overrun - EPS, (
                    f"{gateway.name} committed {books.charged + books.reserved}, the ledger holds {held}")

    def step(self) -> None:
        before = self.today()
        self.now += timedelta(seconds=self.rng.expovariate(1 / 1.5))
        roll = self.rng.random()
        if roll < 0.01:
            self.now += timedelta(minutes=self.rng.uniform(1, 20))  # a quiet spell, maybe across midnight
        elif roll < 0.025:
            self.restart_controller()
        elif roll < 0.04:
            self.kill_gateway()
        elif roll < 0.06:
            self.add_raise()
        elif roll < (0.12 if self.paused else 0.065):  # paused now and then, for a short while
            self.paused = not self.paused
        elif roll < 0.17:
            self.prove_some()
        self.settle_due()
        for gateway in self.gateways:
            if gateway.alive:
                for _ in range(self.rng.randint(0, 3)):
                    self.admit(gateway)
                self.maybe_renew(gateway)
        self.deliver()
        self.rebuild_when_allowed()
        self.check_invariants()
        self.stats["rollovers"] += self.today() != before

    def finish(self) -> None:
        """Every request ends, every live gateway reports its final figures, proofs arrive for those that get one."""
        self.now += self.terms.settled_after + self.terms.lifetime + timedelta(minutes=1)
        self.settle_due()
        self.deliver(everything=True)  # the last messages, late ones included
        if self.ledger.needs_rebuild:
            self.now = max(self.now, self.ledger.grants_from)
            self.rebuild_when_allowed()
        for gateway in self.gateways:
            for day, books in gateway.days.items():
                if gateway.alive:
                    self.send_renewal(gateway, day, books, live=False, final=True)
        self.now += timedelta(minutes=1)
        self.deliver(everything=True)
        self.now += self.terms.settled_after + self.terms.lifetime + SECOND  # the dead's last leases are over
        for gateway in self.gateways:
            if not gateway.alive and not gateway.proof_never:
                for day, books in gateway.days.items():
                    self.ledger = prove(self.ledger, Proof("acme", day, gateway.name, books.charged, self.now),
                                        self.terms)

    def check_no_cent_lost(self) -> None:
        for gateway in self.gateways:
            for day, books in gateway.days.items():
                entry = self.ledger.day("acme", day).gateways.get(gateway.name) if self.ledger.day("acme", day) \
                    else None
                charged_in_ledger = entry.charged_eur if entry else 0.0
                if gateway.alive or not gateway.proof_never:
                    assert charged_in_ledger == pytest.approx(books.charged, rel=1e-12, abs=1e-15), (
                        f"{gateway.name} charged {books.charged} on {day}, the ledger confirms {charged_in_ledger}")
                    assert entry is None or holding_eur(entry) == pytest.approx(books.charged, rel=1e-12, abs=1e-15)
                else:  # never proven: still held at least at what it could charge within its leases
                    held = holding_eur(entry) if entry else 0.0
                    assert held >= books.charged - books.overrun - EPS
        for day in {day for g in self.gateways for day in g.days}:
            tally = sum(g.days[day].charged for g in self.gateways if day in g.days and not g.proof_never)
            proven = sum(self.ledger.day("acme", day).gateways[g.name].charged_eur for g in self.gateways
                         if day in g.days and not g.proof_never and g.name in self.ledger.day("acme", day).gateways)
            assert proven == pytest.approx(tally, rel=1e-12, abs=1e-15)


SEEDS = range(200)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_ledger_holds_the_cap_and_loses_no_cent_under_random_events(seed):
    sim = Simulation(seed)
    for _ in range(300):
        sim.step()
    sim.finish()
    sim.check_no_cent_lost()
    assert sim.stats["grants"] > 0  # the simulation did grant and spend; it is not vacuous
    assert sum(b.charged for g in sim.gateways for b in g.days.values()) > 0


def test_the_simulation_reaches_every_kind_of_event():
    """Across the seeds each event the ledger must survive happened many times (the simulation is not vacuous)."""
    totals: dict[str, int] = {}
    for seed in range(20):
        sim = Simulation(seed)
        for _ in range(300):
            sim.step()
        for kind, count in sim.stats.items():
            totals[kind] = totals.get(kind, 0) + count
    for kind, count in totals.items():
        assert count >= 10, f"only {count} {kind} in 20 seeds: {totals}"
