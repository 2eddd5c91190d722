"""The budget controller's lease desk: the spend-lease ledger (``lynx_budget.leases``) served to the gateways.

One desk per controller process owns the ledger, the lock every change is made under and the ledger's persisted
copy (``LedgerCopy``: a file locally, a ConfigMap in Kubernetes, ``kube.LedgerConfigMap``). Each answer is written
to the copy before it is sent (write-ahead): a grant the copy does not hold was never given, so a restarted
controller continues from the copy exactly. Without the copy it cannot prove what is outstanding and grants
nothing until every earlier lease has expired and charged (``LeaseLedger.without_copy``), then rebuilds from the
spend Prometheus holds (``upkeep``). ``upkeep`` also settles the leases not renewed in time from their gateways' own
counters (``lynx_budget.proofs``): until then they count as fully spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from lynx.contracts.budgets import BudgetSpec
from lynx.contracts.leases import LeaseGrant, LeaseRequest
from lynx.service.bearer import bearer_token
from lynx.service.errors import LynxError
from lynx.service.files import write_atomically
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError
from lynx_budget import gauges
from lynx_budget.leases import (
    LeaseLedger, LeaseTerms, Proof, awaiting_proof, cannot_pay_smallest, confirmed_eur, forget_days_before,
    holdings_eur, prove, rebuild, remainder_eur, renew,
)
from lynx_budget.policy import ConfirmedSpend, SpendFailure, SpendReading, Unpayable, day_window, rfc3339
from lynx_budget.proofs import read_proof
from lynx_budget.spend import read_today

log = logging.getLogger("lynx.budgets.leases")

# Who charged what before a restart that lost the ledger: one account per tenant-day holding the spend Prometheus
# had then. The gateways' later reports are cumulative (they include what they charged before), so until the day
# ends that spend counts twice: the ledger over-holds, and never under-holds.
BEFORE_RESTART = "before-restart"
# What a tenant spent on a day before its gateways first leased for it (a budget set after it had spent): the spend
# Prometheus had when the controller last read it, held as charged. The gateways count their charges from their first
# lease, so nothing counts twice; what they charged between that reading and their first lease is in neither. Not
# while the ledger is rebuilding: the rebuild's BEFORE_RESTART accounts hold that spend already.
BEFORE_LEASES = "before-leases"
# A tenant's yesterday started at most 49 h ago (a 25-hour day before today's, which started at most 24 h ago):
# tenant-days older than this are past every tenant's yesterday, whose late reports are still taken.
KEPT_FOR = timedelta(hours=50)
RETRY_AFTER_SECONDS = 5
INVALID_LEASE_TOKEN = "invalid_lease_token"
NO_BUDGET = "no_budget"
LEDGER_UNWRITABLE = "lease_ledger_unwritable"
BUDGETS_UNREADABLE = "budgets_unreadable"
TOKEN_SETTING = "LYNX_BUDGETS_LEASE_TOKEN_FILE"

DayKey = tuple[str, datetime]  # (tenant, its day's start)


class LedgerCopy(Protocol):
    """Where the ledger is persisted. ``read`` gives None when no copy exists; ``read`` and ``write`` raise OSError
    when the copy cannot be reached."""

    where: str  # for the messages

    def read(self) -> str | None: ...

    def write(self, text: str) -> None: ...

    def set_aside(self, now: datetime) -> str | None:
        """Keeps an unreadable copy for a post-mortem, if it can; where it went."""


class LedgerFile:
    """The ledger in a local file (`lynx serve budgets`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def read(self) -> str | None:
        return self.path.read_text() if self.path.exists() else None

    def write(self, text: str) -> None:
        write_atomically(self.path, text)

    def set_aside(self, now: datetime) -> str | None:
        aside = self.path.with_name(f"{self.path.name}.unreadable-{now:%Y%m%dT%H%M%SZ}")
        with contextlib.suppress(OSError):  # the first answer replaces it anyway
            self.path.replace(aside)
            return str(aside)
        return None


def starting_ledger(copy: LedgerCopy, granted_before: bool, terms: LeaseTerms, now: datetime) -> LeaseLedger:
    """The persisted ledger; a fresh one when no ledger was ever kept here (``granted_before`` False); otherwise one
    that waits out every lease it cannot prove (``LeaseLedger.without_copy``)."""
    try:
        text = copy.read()
    except (OSError, UnicodeDecodeError) as error:
        text, unreadable = None, error
    else:
        unreadable = None
    if text is not None:
        try:
            return LeaseLedger.model_validate_json(text)
        except ValidationError as error:
            unreadable = error
    if unreadable is not None:
        log.error("lease_ledger_unreadable", extra={"fields": {
            "copy": copy.where, "moved_to": copy.set_aside(now), "error": f"{type(unreadable).__name__}: {unreadable}",
            "consequence": "started as if the ledger were lost: nothing granted until every earlier lease has "
                           "expired and been counted"}})
    elif not granted_before:
        return LeaseLedger(epoch=uuid.uuid4().hex)
    else:
        log.warning("lease_ledger_lost", extra={"fields": {
            "copy": copy.where,
            "consequence": "nothing granted until every earlier lease has expired and been counted"}})
    ledger = LeaseLedger.without_copy(uuid.uuid4().hex, now, terms)
    log.warning("lease_ledger_rebuilding", extra={"fields": {"grants_from": rfc3339(ledger.grants_from)}})
    return ledger


def proofs_before_restart(specs: list[BudgetSpec], spent_eur: dict[str, float], as_of: datetime) -> list[Proof]:
    """What each budgeted tenant had spent today as of ``as_of`` (read from Prometheus), as the ``BEFORE_RESTART``
    account of its day: exactly what was charged, every gateway, the dead ones included."""
    return [Proof(spec.tenant, day_window(spec.timezone, as_of)[0], BEFORE_RESTART, spent_eur[spec.tenant], as_of)
            for spec in specs]


class LeaseDesk:
    """Answers the gateways' lease requests from the ledger, persisting each answer before it is sent."""

    def __init__(self, ledger: LeaseLedger, copy: LedgerCopy, token: str, terms: LeaseTerms,
                 budget_of: Callable[[str], BudgetSpec | None], budgets: Callable[[], list[BudgetSpec]],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 last_spent: Callable[[str, datetime], float] | None = None) -> None:
        self.ledger = ledger
        # Failing open: the tenant's spend on the day starting then as last persisted, when Prometheus cannot say.
        self.last_spent = last_spent  # replaced whole, never changed in place: a thread may read it while a request runs
        self.copy = copy
        self.token = token
        self.floor_terms = terms
        self.budget_of = budget_of
        self.budgets = budgets
        self.now = now
        self.lock = asyncio.Lock()
        # The largest worst case of the cheapest request the gateways reported, per tenant-day.
        self.smallest_reported: dict[DayKey, float] = {}
        # Prometheus' last reading of the tenant-days the ledger has not seen yet (BEFORE_LEASES). The reconciliation
        # writes it, on the operator's kopf thread; the desk reads it on its server's: hence its own lock.
        self.spent_before: dict[DayKey, SpendReading] = {}
        self.spent_before_lock = threading.Lock()

    @classmethod
    def open(cls, copy: LedgerCopy, granted_before: bool, token: str, terms: LeaseTerms,
             budget_of: Callable[[str], BudgetSpec | None], budgets: Callable[[], list[BudgetSpec]],
             now: Callable[[], datetime] = lambda: datetime.now(UTC),
             last_spent: Callable[[str, datetime], float] | None = None) -> LeaseDesk:
        """The desk of a starting controller (``starting_ledger``). A ledger just started is saved at once: a restart
        before its first grant then continues it instead of waiting out leases that were never granted."""
        ledger = starting_ledger(copy, granted_before, terms, now())
        try:
            if copy.read() is None:
                copy.write(ledger.model_dump_json())
        except (OSError, UnicodeDecodeError) as error:  # each request says so too, with 503
            log.error("lease_ledger_unwritable", extra={"fields": {"copy": copy.where,
                                                                   "error": f"{type(error).__name__}: {error}"}})
        return cls(ledger, copy, token, terms, budget_of, budgets, now, last_spent)

    def terms(self, key: DayKey, reported_eur: float = 0.0) -> LeaseTerms:
        smallest = max(self.floor_terms.smallest_request_eur, self.smallest_reported.get(key, 0.0), reported_eur)
        return self.floor_terms.model_copy(update={"smallest_request_eur": smallest})

    def authenticate(self, authorization: str | None) -> None:
        presented = bearer_token(authorization)
        if presented is not None and hmac.compare_digest(presented.encode(), self.token.encode()):
            return
        problem = "Missing lease token" if not authorization else "Wrong lease token"
        raise LynxError(401, f"{problem}: a gateway asks for leases with 'Authorization: Bearer <token>', the token "
                             f"in the file the budget controller's {TOKEN_SETTING} names.", INVALID_LEASE_TOKEN,
                        "authentication_error", headers={"WWW-Authenticate": "Bearer"})

    async def answer(self, request: LeaseRequest) -> LeaseGrant:
        """The grant, once the ledger that holds it is on disk."""
        try:
            spec = await asyncio.to_thread(self.budget_of, request.tenant)
        except ValueError as error:  # the budgets file is broken: an admin's to fix
            raise LynxError(503, f"The budget controller cannot read its budgets: {error}", BUDGETS_UNREADABLE,
                            "server_error", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        if spec is None:
            raise LynxError(404, f"Tenant {request.tenant!r} has no budget: no lease is needed or granted for it (the "
                                 "gateway applies unknown_tenants to it).", NO_BUDGET, param="tenant")
        key = (request.tenant, request.day_started_at)
        async with self.lock:
            terms = self.terms(key, request.smallest_request_eur)
            ledger = self.ledger
            with self.spent_before_lock:
                before = self.spent_before.get(key)
            if before is not None and not ledger.needs_rebuild and ledger.day(*key) is None:
                ledger = prove(ledger, Proof(*key, BEFORE_LEASES, before.spent_eur, before.as_of), terms)
            ledger, grant = renew(ledger, spec, request, self.now(), terms, spec.unreachable_allowance)
            await self._persist(ledger)
            self.ledger = ledger
            self.smallest_reported[key] = terms.smallest_request_eur
        self.show(spec, self.now())
        return grant

    async def _persist(self, ledger: LeaseLedger) -> None:
        try:
            await asyncio.to_thread(self.copy.write, ledger.model_dump_json())
        except OSError as error:
            log.error("lease_ledger_unwritable", extra={"fields": {"copy": self.copy.where,
                                                                   "error": f"{type(error).__name__}: {error}"}})
            raise LynxError(503, f"The budget controller cannot save its lease ledger to {self.copy.where} "
                                 f"({error.strerror or error}) and grants nothing it has not saved: ask again later.",
                            LEDGER_UNWRITABLE, "server_error",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    async def upkeep(self, prometheus: PrometheusClient) -> None:
        """The periodic part: rebuild a ledger started without a copy once it may, settle the leases not renewed in
        time by their gateways' counters (``lynx_budget.proofs``), forget old tenant-days, persist."""
        now = self.now()
        proofs = None
        if self.ledger.needs_rebuild and now >= self.ledger.grants_from:
            proofs = await asyncio.to_thread(self._read_proofs, prometheus, now)
        lapsed = [] if self.ledger.needs_rebuild else await asyncio.to_thread(self._read_lapsed, prometheus, now)
        cutoff = now - KEPT_FOR
        async with self.lock:
            ledger = self.ledger
            if proofs is not None and ledger.needs_rebuild:
                ledger = rebuild(ledger, proofs, now, self.floor_terms)
            settled = []
            for proof in lapsed:
                before = holdings_eur(ledger, proof.tenant, proof.day_started_at)
                ledger = prove(ledger, proof, self.floor_terms)
                settled.append((proof, before - holdings_eur(ledger, proof.tenant, proof.day_started_at)))
            ledger = forget_days_before(ledger, cutoff)
            self.smallest_reported = {key: eur for key, eur in self.smallest_reported.items() if key[1] >= cutoff}
            with self.spent_before_lock:
                self.spent_before = {key: read for key, read in self.spent_before.items() if key[1] >= cutoff}
            if ledger == self.ledger:
                return  # nothing changed
            try:
                await self._persist(ledger)
            except LynxError:
                return  # said in the log; tried again next time, the ledger in memory as it was
            self.ledger = ledger
        if proofs is not None:
            log.info("lease_ledger_rebuilt", extra={"fields": {"tenants": len(proofs), "as_of": rfc3339(now)}})
        for proof, released in settled:
            log.info("lease_settled_by_proof", extra={"fields": {
                "tenant": proof.tenant, "gateway": proof.gateway, "charged_eur": proof.charged_eur,
                "as_of": rfc3339(proof.as_of), "released_eur": released}})

    def _read_lapsed(self, prometheus: PrometheusClient, now: datetime) -> list[Proof]:
        """Proofs of what the gateways holding a lease past its deadline + the longest request really charged, for
        the tenants' today (an earlier day's leases hold nothing today's cap needs). A gateway Prometheus cannot
        prove yet is read again next time; its leases keep holding meanwhile."""
        awaiting = awaiting_proof(self.ledger, now, self.floor_terms)
        if not awaiting:
            return []
        todays = {(spec.tenant, day_window(spec.timezone, now)[0]) for spec in self.budgets()}
        proofs = []
        for (tenant, day_started_at, gateway), settles_at in awaiting.items():
            if (tenant, day_started_at) not in todays:
                continue
            try:
                proof = read_proof(prometheus, tenant, day_started_at, gateway, settles_at, now)
            except PrometheusError as error:
                log.warning("lease_proof_unreadable", extra={"fields": {
                    "tenant": tenant, "gateway": gateway, "error": str(error),
                    "consequence": "its expired leases keep holding their ceilings until its counter can be read"}})
                break  # Prometheus is down or broken: the next gateways would fail alike
            if proof is not None:
                proofs.append(proof)
        return proofs

    def _read_proofs(self, prometheus: PrometheusClient, now: datetime) -> list[Proof] | None:
        specs = self.budgets()
        spent: dict[str, float] = {}
        for spec in specs:
            today = day_window(spec.timezone, now)[0]
            spend = read_today(prometheus, spec.tenant, today, now)
            if isinstance(spend, SpendReading):
                spent[spec.tenant] = spend.spent_eur
                continue
            error = f"{spend.reason}: {spend.detail}"
            if self.last_spent is None:
                log.warning("lease_ledger_rebuild_waits", extra={"fields": {
                    "tenant": spec.tenant, "error": error,
                    "consequence": "still rebuilding: nothing granted until today's spend can be read"}})
                return None
            # Budgets that fail open serve a tenant whose spend cannot be read: the ledger likewise starts from the
            # last spend the controller persisted, which misses what was charged after it was read.
            last = self.last_spent(spec.tenant, today)
            log.warning("lease_ledger_rebuilt_from_last_known_spend", extra={"fields": {
                "tenant": spec.tenant, "error": error, "spent_eur": last,
                "consequence": "charges after that reading are not counted (budgets fail open)"}})
            spent[spec.tenant] = last
        return proofs_before_restart(specs, spent, now)

    def inform(self, spec: BudgetSpec, spend: SpendReading | SpendFailure,
               now: datetime) -> tuple[SpendReading | ConfirmedSpend | SpendFailure, Unpayable | None]:
        """What the ledger adds to a reconciliation (the local loop's and the operator's): the spend the gateways
        confirmed when Prometheus cannot say, and whether the remainder can pay for the smallest request. Shows the
        ledger's gauges."""
        key = (spec.tenant, day_window(spec.timezone, now)[0])
        if isinstance(spend, SpendReading) and self.ledger.day(*key) is None:
            with self.spent_before_lock:
                self.spent_before[key] = spend  # until the tenant's first lease today
        if isinstance(spend, SpendFailure):
            spend = self.spend_reading(spec, now, spend) or spend
        self.show(spec, now)
        return spend, self.unpayable(spec, now)

    def unpayable(self, spec: BudgetSpec, now: datetime) -> Unpayable | None:
        """Whether the ledger finds that the tenant's remainder today cannot pay for its smallest request."""
        ledger = self.ledger
        terms = self.terms((spec.tenant, day_window(spec.timezone, now)[0]))
        if not cannot_pay_smallest(ledger, spec, now, terms):
            return None
        return Unpayable(remainder_eur(ledger, spec, now), terms.smallest_request_eur)

    def spend_reading(self, spec: BudgetSpec, now: datetime, failure: SpendFailure) -> ConfirmedSpend | None:
        """Today's spend as the gateways confirmed it to the ledger, for when Prometheus cannot say; None while the
        ledger is rebuilding. It misses what gateways charged since their last renewal, but the gateways that lease
        spend only within their leases, so it is enough to lift a Blocked a raise has made wrong."""
        ledger = self.ledger
        if ledger.needs_rebuild:
            return None
        return ConfirmedSpend(confirmed_eur(ledger, spec.tenant, day_window(spec.timezone, now)[0]), now, failure)

    def show(self, spec: BudgetSpec, now: datetime) -> None:
        ledger, today = self.ledger, day_window(spec.timezone, now)[0]
        gauges.show_holdings(spec.tenant, holdings_eur(ledger, spec.tenant, today),
                             confirmed_eur(ledger, spec.tenant, today))
