"""Budget enforcement in the gateway: the published decisions, then reserve and settle each request.

The budget controller (the kopf operator, or the local loop under ``lynx up``) publishes each
tenant's state and remaining budget (``BudgetDecisions``) to a file this gateway re-reads when it
changes; the gateway never asks Prometheus. Per request:

1. Admission, before any upstream call: a Blocked or Paused tenant, a tenant with nothing left, and
   a tenant without a budget when unknown tenants are refused get 429 ``insufficient_quota``.
2. Reservation, once the prompt is tokenized and before the decoder is called: the request's
   worst-case cost (``pricing.worst_case_cost``: its prompt and max_tokens decoded alone, plus
   the stages it has used) must fit

       available = remaining, as of the decision's spend_as_of
                   - what this gateway charged the tenant since spend_as_of (``RecentCharges``)
                   - the reservations of the tenant's requests in flight here

   or the request is refused (429, charged for the stages it used).
3. Settlement: the request's one ledger charge releases its reservation and is remembered until
   a decision whose spend includes it has arrived.

Spend leases. With LYNX_GATEWAY_BUDGET_CONTROLLER_URL set (``lynx up`` sets it), steps 1 and 2 are the lease's
instead: admission holds the cheapest request's worst case in what the budget controller granted this gateway for
the tenant-day (``lynx.gateway.leases``; it pays for the stages before the reservation), and the reservation swaps it
for the request's own worst case. The controller keeps confirmed + outstanding <= cap across every gateway, so spend
passes the cap only by charges beyond their worst case, at any number of gateways (docs/COSTS.md, "Spend leases
across gateways").

Without leases, one gateway: every charge after spend_as_of is subtracted and every admitted request holds its
worst case, so spend passes the cap only by what was in flight when the budget ran out and not covered by a
reservation (the same two sources) and reservations made under a larger cap than the next decision's (a raise that
expired under them). With N gateways and no leases each subtracts only its own charges: until the controller's next
decision counts the others', each may admit up to the whole remaining budget R, so spend can pass the cap by up to
(N - 1) x R (docs/BENCHMARKS.md, "Budget enforcement under load", measures both).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from datetime import UTC
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lynx.accounting.pricing import CostSettings, RequestTimes, SoloDecoder, worst_case_cost
from lynx.contracts.budgets import BudgetDecisions, TenantDecision
from lynx.gateway.leases import QUOTA, LeaseKeeper
from lynx.gateway.refusals import ADMISSION, RESERVATION, refused
from lynx.service.errors import LynxError
from lynx.telemetry.metrics import enforcement_metrics
from lynx.service.watched_file import WatchedFile

# Charges remembered per tenant; beyond that the two oldest merge (see RecentCharges).
RECENT_CHARGES = 2048
# Charges this much older than a decision's spend_as_of are forgotten (a later decision read from a
# slightly older sample still finds them).
KEEP_BEHIND_SECONDS = 120.0
# Why a tenant with a budget is refused (``lynx_budget_refused_requests_total``'s reason label; ``unknown_tenant`` is
# for tenants without one).
BUDGET_REFUSALS = ("paused", "blocked", "insufficient")


class RecentCharges:
    """What this gateway charged one tenant recently, as (unix time, EUR), bounded in size.

    When full, the two oldest entries merge into one stamped with the later time: the sum is kept and
    counted for at least as long as its parts would have been, so charges are never under-counted."""

    def __init__(self, capacity: int = RECENT_CHARGES) -> None:
        self.capacity = capacity
        self.entries: deque[tuple[float, float]] = deque()

    def add(self, at: float, eur: float) -> None:
        self.entries.append((at, eur))
        if len(self.entries) > self.capacity:
            _, first = self.entries.popleft()
            second_at, second = self.entries.popleft()
            self.entries.appendleft((second_at, first + second))

    def since(self, moment: float) -> float:
        return sum(eur for at, eur in self.entries if at > moment)

    def forget_before(self, moment: float) -> None:
        while self.entries and self.entries[0][0] < moment:
            self.entries.popleft()


def decisions_file(path: Path) -> WatchedFile[BudgetDecisions | None]:
    """The published decisions, re-read when the file changes (like the tenants file). A missing file means no
    budgets; a file that cannot be read keeps the last decisions read (a controller writes it atomically, so this is
    a broken deployment: ``lynx.service.watched_file`` says so)."""
    return WatchedFile(path, "budget_decisions", BudgetDecisions.model_validate_json, absent=None)


def counted_until(decision: TenantDecision) -> float:
    """Charges up to this moment are in the decision's spend; later ones are not."""
    return (decision.spend_as_of or decision.day_started_at).timestamp()


def eur(amount: float) -> str:
    return f"{amount:.4g} EUR"


class Budgets:
    """Every tenant's decision, this gateway's recent charges and its reservations in flight.

    Runs on the event loop only: each check and the reservation it allows run with no await between them (a lease
    renewal is awaited before the check, never between), so two requests never both see the same budget as free."""

    def __init__(self, path: Path, now: Callable[[], float] = time.time, leases: LeaseKeeper | None = None) -> None:
        self.file = decisions_file(path)
        self.leases = leases  # None: the decisions' remaining budget is this gateway's alone (one gateway)
        self.now = now
        self.charges: defaultdict[str, RecentCharges] = defaultdict(RecentCharges)
        self.reserved: defaultdict[str, float] = defaultdict(float)
        self.holds: defaultdict[str, int] = defaultdict(int)
        self.metrics = enforcement_metrics()

    def decision(self, tenant: str) -> TenantDecision | None:
        if self.file.refresh() and self.file.value is not None:
            for name, decision in self.file.value.tenants.items():
                self.charges[name].forget_before(counted_until(decision) - KEEP_BEHIND_SECONDS)
                for reason in BUDGET_REFUSALS:  # a budgeted tenant's refusals read 0, not "no data", until one happens
                    self.metrics.refused.labels(name, reason)
        decisions = self.file.value
        return decisions.tenants.get(tenant) if decisions else None

    def spent(self, tenant: str, decision: TenantDecision) -> float | None:
        """Spent today: the decision's figure plus what this gateway charged since."""
        if decision.spent_eur is None:
            return None
        return decision.spent_eur + self.charges[tenant].since(counted_until(decision))

    def available(self, tenant: str, decision: TenantDecision) -> float:
        return decision.remaining_eur - self.charges[tenant].since(counted_until(decision)) - self.reserved[tenant]

    def admit(self, tenant: str) -> Hold:
        """Before any upstream call: refuses (429) a tenant that may not spend at all now."""
        return Hold(self, tenant, self.check(tenant, None))

    def check(self, tenant: str, request: Estimate | None) -> TenantDecision | None:
        """The tenant's decision, or the 429 that refuses it now (``request``: also when its worst case does not fit)."""
        decision = self.decision(tenant)
        phase = ADMISSION if request is None else RESERVATION
        if decision is None:
            decisions = self.file.value
            if decisions is not None and decisions.unknown_tenants == "closed":
                raise self._refuse(tenant, "unknown_tenant", phase, (
                    f"Tenant '{tenant}' has no daily budget, and this deployment refuses tenants without one; "
                    "ask an admin to set one."), None)
            return None
        if decision.state == "Paused":
            raise self._refuse(tenant, "paused", phase, decision.reason, None)  # the policy's words: who paused, until when
        resets = self._resets(decision)
        if decision.state == "Blocked":
            raise self._refuse(tenant, "blocked", phase, f"{decision.reason} As this gateway counts: "
                               f"{self._standing(tenant, decision)} {resets}", decision)
        if self.leases is not None:
            return decision  # what may be spent is the lease's to say (Hold.reserve)
        available = self.available(tenant, decision)
        if request is None and available <= 0:
            raise self._refuse(tenant, "insufficient", phase, (
                f"Tenant '{tenant}' has no budget left today: {self._standing(tenant, decision)} {resets} "
                "Ask an admin for a raise to continue before then."), decision)
        if request is not None and request.eur > available:
            raise self._refuse(tenant, "insufficient", phase, (
                f"This request could cost up to {eur(request.eur)} ({request.describe()} at worst case), more than "
                f"the {eur(max(available, 0.0))} tenant '{tenant}' has left today: {self._standing(tenant, decision)} "
                f"{resets} Lower max_tokens (or lynx_max_cost_eur), or ask an admin for a raise."), decision)
        return decision

    def _standing(self, tenant: str, decision: TenantDecision) -> str:
        spent = self.spent(tenant, decision)
        spent_text = eur(spent) if spent is not None else "an amount that cannot be read now"
        in_flight = f", {eur(self.reserved[tenant])} reserved by requests in flight" if self.reserved[tenant] else ""
        return f"the daily cap is {eur(decision.cap_eur)}, spent {spent_text}{in_flight}."

    def _resets(self, decision: TenantDecision) -> str:
        resets_at = decision.resets_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return f"The budget resets at the tenant's midnight, {resets_at} (in {self._seconds_to_reset(decision)} s)."

    def _seconds_to_reset(self, decision: TenantDecision) -> int:
        return max(1, math.ceil(decision.resets_at.timestamp() - self.now()))

    def _refuse(self, tenant: str, reason: str, phase: str, message: str,
                decision: TenantDecision | None) -> LynxError:
        headers = {"Retry-After": str(self._seconds_to_reset(decision))} if decision is not None else {}
        return refused(tenant, reason, phase, LynxError(429, message, QUOTA, QUOTA, headers=headers))

    def reserve(self, tenant: str, amount: float) -> None:
        self.reserved[tenant] += amount
        self.holds[tenant] += 1
        self.metrics.reserved.labels(tenant).set(self.reserved[tenant])

    def release(self, tenant: str, reserved: float | None, charged: float | None) -> None:
        """A request settled: its reservation (if it made one) goes, its charge (if it was charged) counts."""
        if reserved is not None:
            self.holds[tenant] -= 1
            # Exactly 0 once nothing is in flight, whatever the float rounding of the sums.
            self.reserved[tenant] = self.reserved[tenant] - reserved if self.holds[tenant] else 0.0
            self.metrics.reserved.labels(tenant).set(self.reserved[tenant])
        if charged is not None:
            self.charges[tenant].add(self.now(), charged)


@dataclass(frozen=True)
class Estimate:
    """A request's worst-case cost, and what it was computed from (for the refusal's message)."""

    prompt_tokens: int
    max_tokens: int
    eur: float

    @classmethod
    def worst_case(cls, so_far: RequestTimes, prompt_tokens: int, max_tokens: int, solo: SoloDecoder,
                   rates: CostSettings) -> Estimate:
        return cls(prompt_tokens, max_tokens, worst_case_cost(so_far, prompt_tokens, max_tokens, solo, rates))

    def describe(self) -> str:
        return f"its {self.prompt_tokens} prompt tokens and max_tokens {self.max_tokens}"


def affordable_estimate(ceiling_eur: float | None, so_far: RequestTimes, prompt_tokens: int, max_tokens: int,
                        solo: SoloDecoder, rates: CostSettings) -> Estimate:
    """The worst case at the largest max_tokens (<= ``max_tokens``, at least 1) whose worst case stays within
    ``ceiling_eur`` (``max_tokens`` itself without a ceiling). The worst case grows with max_tokens, so the search
    halves the range; the estimate returned is the one the search computed, not computed again."""
    whole = Estimate.worst_case(so_far, prompt_tokens, max_tokens, solo, rates)
    if ceiling_eur is None or whole.eur <= ceiling_eur or max_tokens == 1:
        return whole
    low, high, fitting = 1, max_tokens - 1, None
    while low < high:
        middle = (low + high + 1) // 2
        candidate = Estimate.worst_case(so_far, prompt_tokens, middle, solo, rates)
        if candidate.eur <= ceiling_eur:
            low, fitting = middle, candidate
        else:
            high = middle - 1
    # low moved only to a fitting candidate's max_tokens; unmoved, it is the floor of one token, not yet computed.
    return fitting if fitting is not None else Estimate.worst_case(so_far, prompt_tokens, low, solo, rates)


class Hold:
    """One request's claim on its tenant's budget: a reservation, then the ledger's charge that settles it."""

    def __init__(self, budgets: Budgets, tenant: str, decision: TenantDecision | None) -> None:
        self.budgets = budgets
        self.tenant = tenant
        self.decision = decision  # as admitted: its per-request cap and routing apply to the whole request
        self.reserved: float | None = None
        self.settled = False
        self.leased: float | None = None  # what the request holds in the lease: the cheapest request's worst case,
        # then its own
        self.lease = None if budgets.leases is None or decision is None else budgets.leases.lease(
            tenant, decision.day_started_at, decision.cap_eur)  # the tenant-day it is admitted in is charged

    @property
    def per_request_cap_eur(self) -> float | None:
        return self.decision.per_request_cap_eur if self.decision else None

    @property
    def wants_cheaper(self) -> bool:
        return self.decision is not None and self.decision.state == "Warning" and self.decision.cheaper_near_cap

    async def enter(self) -> None:
        """With leases, before any upstream call: holds the cheapest request's worst case in the lease, which pays for
        the stages the request uses before its own reservation; refuses (429, for nothing) when the lease cannot pay
        even that. So a refusal after tokenization is charged within the lease, never beyond it."""
        if self.lease is not None:
            leases = self.budgets.leases
            await leases.admit(self.lease, leases.smallest_request_eur,
                               "what every request holds from admission: the cheapest request")
            self.leased = leases.smallest_request_eur

    async def reserve(self, request: Estimate) -> None:
        """Holds the request's worst case, or refuses it (429) when that does not fit what is left (with leases:
        what this gateway's lease leaves, renewed once if need be)."""
        if self.settled or self.reserved is not None:
            raise RuntimeError("a request reserves once, before it is settled")
        self.budgets.check(self.tenant, request)
        if self.lease is not None:
            await self.budgets.leases.admit(self.lease, request.eur, request.describe(), replacing=self.leased)
            self.leased = request.eur
        self.reserved = request.eur
        self.budgets.reserve(self.tenant, request.eur)

    def settle(self, charged_eur: float | None) -> None:
        """The ledger charged the request (``None``: charging failed): release the reservation, remember the charge."""
        if self.settled:
            return
        self.settled = True
        self.budgets.release(self.tenant, self.reserved, charged_eur)
        if self.lease is not None:
            self.budgets.leases.settle(self.lease, self.leased, charged_eur)
