"""The spend-lease ledger: how much of each tenant-day's cap every gateway may spend, so the cap holds across gateways.

Pure: no I/O and no clock reads (``now`` is passed in); every function returns a new ledger and leaves the one it
was given alone (the two share the accounts it did not change: change neither in place), so the caller persists
the new one before it replies (write-ahead) and a restarted controller continues from the persisted copy exactly.

Per tenant-day (the tenant's local day, ``policy.day_window``) and gateway process, an account holds against the cap

    holding = max(charged, the ceilings of the leases the gateway may still act on)

``charged`` is the gateway's cumulative charge for the tenant-day as last reported or proven (a lost, repeated or
late report changes nothing). The invariant: the holdings of a tenant-day never exceed its cap when a lease is
granted, and when the cap shrinks below them (a raise expired) nothing is granted and they do not grow, except by
charges beyond a request's worst case (a decoder slower than estimated: the one source of overshoot).

- Renewal (``renew``): the new ceiling is keep + min(want, free), free = cap - the other gateways' holdings - keep.
  Until the gateway names the new lease in a later request it may still act on the one it declared, so the
  account holds both; every older grant is dead (the gateway acts only on the answer to its latest request).
- A lease not renewed by its deadline keeps holding its whole ceiling (fully spent) until ``prove``: the gateway's
  own counter, read at or after expires_at + the longest a request may last, when all it admitted has charged, or
  read once the gateway is gone (``lynx_budget.proofs``; the controller looks for ``awaiting_proof``). Without
  proof it holds for the rest of the day: conservative, never optimistic.
- A controller without a persisted ledger (``LeaseLedger.without_copy``) grants nothing until one lease lifetime
  + the longest request have passed since it started (every lease granted before has expired and its requests
  have charged), then ``rebuild`` sets each gateway's charged from proven counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from lynx.contracts.budgets import BudgetSpec, BudgetState
from lynx.contracts.leases import GrantOutcome, LeaseGrant, LeaseRequest, UnreachableAllowance
from lynx_budget.policy import day_window, decide_state, effective_cap, format_eur, require_aware, rfc3339


# Less than this is the rounding of sums that are equal, not budget: granted as nothing.
NOTHING_EUR = 1e-12


class LeaseTerms(BaseModel, frozen=True):
    """The controller's lease settings (its settings object fills them)."""

    lifetime_seconds: float = Field(default=30.0, gt=0, description="How long a lease is valid after its request.")
    longest_request_seconds: float = Field(
        gt=0, description="The gateway's limit on one request: what a lease admitted has charged this long after it "
                          "expired.")
    smallest_request_eur: float = Field(
        gt=0, description="The worst case of the cheapest request (one prompt token, max_tokens 1): a tenant that "
                          "cannot pay it is Blocked.")

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self.lifetime_seconds)

    @property
    def settled_after(self) -> timedelta:
        """From a lease's deadline until everything admitted under it has charged."""
        return timedelta(seconds=self.longest_request_seconds)


class HeldLease(BaseModel):
    lease_id: str
    ceiling_eur: float
    expires_at: datetime


class GatewayAccount(BaseModel):
    """One gateway process's part of one tenant-day."""

    charged_eur: float = 0.0
    keep_eur: float = 0.0  # charged + reserved in flight, as of its last request
    sequence: int = 0  # the last request applied
    leases: list[HeldLease] = Field(default_factory=list)  # those it may still act on: at most two
    last_grant: LeaseGrant | None = None  # sent again when its request arrives twice


class TenantDay(BaseModel):
    tenant: str
    day_started_at: datetime
    gateways: dict[str, GatewayAccount] = Field(default_factory=dict)


class LeaseLedger(BaseModel):
    """Every tenant-day's accounts; serialized as it is (``model_dump_json``) to persist it.

    ``LeaseLedger(epoch=...)`` claims that no lease is outstanding anywhere; a controller that has no persisted copy
    cannot know that (its first start looks like a lost copy) and starts from ``without_copy``."""

    epoch: str = Field(min_length=1, description="Unique per ledger started from nothing: lease ids never repeat.")
    issued: int = 0
    grants_from: datetime | None = Field(
        default=None, description="When a ledger started without a persisted copy may grant, once rebuilt.")
    needs_rebuild: bool = False
    days: list[TenantDay] = Field(default_factory=list)

    @classmethod
    def without_copy(cls, epoch: str, started_at: datetime, terms: LeaseTerms) -> LeaseLedger:
        """A controller that cannot prove what is outstanding (no persisted ledger, or its first start)."""
        require_aware(started_at)
        return cls(epoch=epoch, grants_from=started_at + terms.lifetime + terms.settled_after, needs_rebuild=True)

    def day(self, tenant: str, day_started_at: datetime) -> TenantDay | None:
        return next((d for d in self.days if d.tenant == tenant and d.day_started_at == day_started_at), None)


@dataclass(frozen=True)
class Proof:
    """A gateway process's own charged counter for a tenant-day, read (from Prometheus) as of ``as_of``."""

    tenant: str
    day_started_at: datetime
    gateway: str
    charged_eur: float
    as_of: datetime


def holding_eur(account: GatewayAccount) -> float:
    return max([account.charged_eur, *(lease.ceiling_eur for lease in account.leases)])


def holdings_eur(ledger: LeaseLedger, tenant: str, day_started_at: datetime, but: str | None = None) -> float:
    """What a tenant-day's accounts hold against its cap: confirmed + outstanding (``but``: that gateway left out)."""
    day = ledger.day(tenant, day_started_at)
    return 0.0 if day is None else sum(holding_eur(a) for g, a in day.gateways.items() if g != but)


def confirmed_eur(ledger: LeaseLedger, tenant: str, day_started_at: datetime) -> float:
    day = ledger.day(tenant, day_started_at)
    return 0.0 if day is None else sum(a.charged_eur for a in day.gateways.values())


def committed_eur(account: GatewayAccount, now: datetime) -> float:
    """Spent: charged as last reported; a lease past its deadline counts as fully spent.

    Not charged + reserved: the requests in flight reserve their worst cases, several times what they usually cost,
    and counting those would call a tenant Blocked (and refuse it at admission) while much of its cap is left. While
    they are in flight, a request that does not fit is refused by its gateway's lease, for the moment only."""
    if any(lease.expires_at <= now for lease in account.leases):
        return holding_eur(account)
    return account.charged_eur


def remainder_eur(ledger: LeaseLedger, spec: BudgetSpec, now: datetime) -> float:
    """What today's cap leaves once every gateway's committed spend is counted (negative past the cap).

    Not cap - holdings: a gateway's unused headroom can still be spent through it (and comes back at its next
    renewal), so a tenant whose leases are handed out but idle is not out of budget."""
    today = day_window(spec.timezone, now)[0]
    day = ledger.day(spec.tenant, today)
    committed = 0.0 if day is None else sum(committed_eur(a, now) for a in day.gateways.values())
    return effective_cap(spec, now) - committed


def cannot_pay_smallest(ledger: LeaseLedger, spec: BudgetSpec, now: datetime, terms: LeaseTerms) -> bool:
    """Blocked: what is left cannot pay for the cheapest request, though spend may still be under the cap."""
    return remainder_eur(ledger, spec, now) < terms.smallest_request_eur


def tenant_state(ledger: LeaseLedger, spec: BudgetSpec, now: datetime, terms: LeaseTerms) -> BudgetState:
    if spec.paused:
        return "Paused"
    if cannot_pay_smallest(ledger, spec, now, terms):
        return "Blocked"
    cap = effective_cap(spec, now)
    return decide_state(cap - remainder_eur(ledger, spec, now), cap, spec.warning_percent)


def unreachable_overshoot_eur(gateways: int, allowance: UnreachableAllowance | None) -> float:
    """How far a tenant's spend may pass its cap while the controller is unreachable: N x the allowance, else 0."""
    if gateways < 0:
        raise ValueError(f"a number of gateways cannot be negative, got {gateways}")
    return 0.0 if allowance is None else gateways * allowance.per_gateway_eur


def _changing(ledger: LeaseLedger, tenant: str, day_started_at: datetime, gateway: str
              ) -> tuple[LeaseLedger, TenantDay, GatewayAccount]:
    """A new ledger whose one account (created if new) is its own copy, to change; the rest is shared."""
    days = list(ledger.days)
    index = next((i for i, d in enumerate(days) if d.tenant == tenant and d.day_started_at == day_started_at), None)
    if index is None:
        index = len(days)
        days.append(TenantDay(tenant=tenant, day_started_at=day_started_at))
    old = days[index].gateways.get(gateway)
    account = GatewayAccount() if old is None else old.model_copy(deep=True)
    day = days[index] = days[index].model_copy(update={"gateways": {**days[index].gateways, gateway: account}})
    return ledger.model_copy(update={"days": days}), day, account


def _acting_lease(account: GatewayAccount, request: LeaseRequest, now: datetime, terms: LeaseTerms
                  ) -> list[HeldLease]:
    """The lease the gateway declared it acts on until it hears back: the only older one still alive."""
    if request.acting_lease_id is None:
        return []
    known = next((lease for lease in account.leases if lease.lease_id == request.acting_lease_id), None)
    if known is None:
        # Granted before a restart that lost the ledger: its deadline is unknown, so it is held for a whole
        # lifetime from now, after which it has certainly expired.
        return [HeldLease(lease_id=request.acting_lease_id, ceiling_eur=request.acting_ceiling_eur,
                          expires_at=now + terms.lifetime)]
    return [known.model_copy(update={"ceiling_eur": min(known.ceiling_eur, request.acting_ceiling_eur)})]


def _outcome(ledger: LeaseLedger, spec: BudgetSpec, request: LeaseRequest, now: datetime, grantable: float
             ) -> tuple[GrantOutcome, str]:
    """Whether what is free for this request (``grantable``) may be granted now, and why not when not."""
    tenant = spec.tenant
    if request.day_started_at != day_window(spec.timezone, now)[0]:
        return "other_day", (f"The lease asked for {tenant}'s day starting {rfc3339(request.day_started_at)} is not "
                             "the controller's today: its charges are recorded, nothing is granted.")
    if spec.paused:
        return "paused", f"Paused by an admin: nothing is granted to {tenant} until an admin resumes it."
    if ledger.needs_rebuild:
        return "rebuilding", ("The budget controller restarted without its ledger: it grants nothing until every "
                              f"earlier lease has expired and been counted, from {rfc3339(ledger.grants_from)}.")
    if grantable <= 0 < request.want_eur:
        return "exhausted", (f"Nothing of {tenant}'s cap of {format_eur(effective_cap(spec, now))} is free: it is "
                             "spent or held by the leases of other gateways, which give back what they do not use "
                             "when they renew.")
    return "granted", f"Granted {format_eur(grantable)} of the {format_eur(request.want_eur)} asked."


def renew(ledger: LeaseLedger, spec: BudgetSpec, request: LeaseRequest, now: datetime, terms: LeaseTerms,
          allowance: UnreachableAllowance | None = None) -> tuple[LeaseLedger, LeaseGrant]:
    """Answers one gateway's renewal: (the ledger to persist before replying, the grant to reply with)."""
    require_aware(now)
    if request.tenant != spec.tenant:
        raise ValueError(f"a renewal for tenant {request.tenant!r} answered with the budget of {spec.tenant!r}")
    ledger, day, account = _changing(ledger, request.tenant, request.day_started_at, request.gateway)
    account.charged_eur = max(account.charged_eur, request.charged_eur)
    if request.sequence == account.sequence and account.last_grant is not None:
        return ledger, account.last_grant  # the same request again: the same answer
    if request.sequence <= account.sequence:
        return ledger, _grant(ledger, spec, request, now, terms, allowance, "", request.keep_eur, "stale",
                              f"Request {request.sequence} is older than request {account.sequence}, already answered.")

    account.sequence, account.keep_eur = request.sequence, request.keep_eur
    account.leases = _acting_lease(account, request, now, terms)
    others = sum(holding_eur(a) for g, a in day.gateways.items() if g != request.gateway)
    free = effective_cap(spec, now) - others - request.keep_eur
    if free < NOTHING_EUR:  # float rounding of sums that are equal: nothing is free (a tiny want is still granted)
        free = 0.0
    grantable = max(min(request.want_eur, free), 0.0)
    outcome, reason = _outcome(ledger, spec, request, now, grantable)
    granted = grantable if outcome == "granted" else 0.0
    ledger.issued += 1
    lease_id = f"{ledger.epoch}-{ledger.issued}"
    ceiling = request.keep_eur + granted
    account.leases.append(HeldLease(lease_id=lease_id, ceiling_eur=ceiling, expires_at=now + terms.lifetime))
    account.last_grant = _grant(ledger, spec, request, now, terms, allowance, lease_id, ceiling, outcome, reason)
    return ledger, account.last_grant


def _grant(ledger: LeaseLedger, spec: BudgetSpec, request: LeaseRequest, now: datetime, terms: LeaseTerms,
           allowance: UnreachableAllowance | None, lease_id: str, ceiling: float, outcome: GrantOutcome,
           reason: str) -> LeaseGrant:
    return LeaseGrant(
        gateway=request.gateway, tenant=request.tenant, day_started_at=request.day_started_at,
        sequence=request.sequence, lease_id=lease_id, ceiling_eur=ceiling,
        granted_eur=max(ceiling - request.keep_eur, 0.0), lifetime_seconds=terms.lifetime_seconds,
        expires_at=now + terms.lifetime, outcome=outcome, state=tenant_state(ledger, spec, now, terms),
        reason=reason, unreachable_allowance=allowance)


def prove(ledger: LeaseLedger, proof: Proof, terms: LeaseTerms) -> LeaseLedger:
    """A gateway's proven counter: its charged becomes exact, and the leases it settles stop holding.

    A lease is settled by a reading at or after its deadline + the longest request: whatever it admitted has
    charged by then and is in the counter. Younger leases keep holding their ceilings."""
    require_aware(proof.as_of)
    ledger, _, account = _changing(ledger, proof.tenant, proof.day_started_at, proof.gateway)
    account.charged_eur = max(account.charged_eur, proof.charged_eur)
    account.leases = [lease for lease in account.leases if lease.expires_at + terms.settled_after > proof.as_of]
    return ledger


def awaiting_proof(ledger: LeaseLedger, now: datetime, terms: LeaseTerms) -> dict[tuple[str, datetime, str], datetime]:
    """The accounts (tenant, day's start, gateway) holding a lease not renewed by its deadline whose requests have all
    ended by now (deadline + the longest request), each with the earliest such moment: a reading of the gateway's
    counter from then on proves what that lease really spent."""
    awaiting = {}
    for day in ledger.days:
        for gateway, account in day.gateways.items():
            settled = [lease.expires_at + terms.settled_after for lease in account.leases
                       if lease.expires_at + terms.settled_after <= now]
            if settled:
                awaiting[(day.tenant, day.day_started_at, gateway)] = min(settled)
    return awaiting


def rebuild(ledger: LeaseLedger, proofs: Iterable[Proof], as_of: datetime, terms: LeaseTerms) -> LeaseLedger:
    """A ledger started without a copy, rebuilt from every gateway's counter read as of ``as_of``: it may grant again.

    ``proofs`` must name every gateway process that charged a tenant-day still open (Prometheus has them all, the
    dead ones included); one left out counts as having charged nothing."""
    require_aware(as_of)
    if ledger.grants_from is not None and as_of < ledger.grants_from:
        raise ValueError(f"counters read at {rfc3339(as_of)} may miss leases granted before the restart; read them "
                         f"at or after {rfc3339(ledger.grants_from)}")
    for proof in proofs:
        if proof.as_of != as_of:
            raise ValueError(f"the proof of {proof.gateway} was read at {rfc3339(proof.as_of)}, not {rfc3339(as_of)}")
        ledger = prove(ledger, proof, terms)
    return ledger.model_copy(update={"needs_rebuild": False})


def forget_days_before(ledger: LeaseLedger, moment: datetime) -> LeaseLedger:
    """Drops the tenant-days that started before ``moment`` (the caller keeps yesterday for its late reports)."""
    return ledger.model_copy(update={"days": [d for d in ledger.days if d.day_started_at >= moment]})
