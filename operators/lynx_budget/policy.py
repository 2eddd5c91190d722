"""The budget decision: spend, cap, raises, the clock and the last status in; state, audit and events out.

Pure: no I/O and no clock reads (``now`` is passed in), so the kopf operator and the embedded default's local loop
decide the same way from the same inputs, and the tests need neither a cluster nor a Prometheus.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from lynx.accounting.spend import SpendReading
from lynx.contracts.budgets import MAX_RAISE_HOURS, BudgetSpec, BudgetState, TemporaryRaise, TenantDecision, UnknownSpend

PROMETHEUS_REACHABLE = "PrometheusReachable"
# How far a raise's requested_at may run ahead of the controller's clock (the CLI runs on an admin's machine).
# Beyond it the raise is refused: a requested_at in the future would stretch a raise past 72 h from now.
RAISE_CLOCK_SKEW = timedelta(minutes=5)

AuditKind = Literal["state", "raise_added", "raise_rejected", "raise_expired", "paused", "resumed", "day_rollover",
                    "spend_unavailable", "spend_restored"]
# Every audit entry is also a Kubernetes Event: its type and reason.
EVENT_OF_KIND: dict[str, tuple[Literal["Normal", "Warning"], str]] = {
    "state": ("Normal", "StateChanged"),
    "raise_added": ("Normal", "RaiseAdded"),
    "raise_rejected": ("Warning", "RaiseRejected"),
    "raise_expired": ("Normal", "RaiseExpired"),
    "paused": ("Warning", "Paused"),
    "resumed": ("Normal", "Resumed"),
    "day_rollover": ("Normal", "DayRollover"),
    "spend_unavailable": ("Warning", "SpendUnavailable"),
    "spend_restored": ("Normal", "SpendRead"),
}


@dataclass(frozen=True)
class SpendFailure:
    """Why spend could not be read: the condition's reason ("Unreachable", "HttpError", "BadAnswer") and what
    happened, in words."""

    reason: str
    detail: str


@dataclass(frozen=True)
class ConfirmedSpend:
    """Today's spend as the gateways confirmed it to the lease ledger, standing in for the Prometheus reading that
    failed (``failure``). A lower bound: gateways report at renewals only."""

    spent_eur: float
    as_of: datetime
    failure: SpendFailure


@dataclass(frozen=True)
class Unpayable:
    """The spend leases' finding that what is left of today's cap, counting what the gateways hold in flight, cannot
    pay for the tenant's smallest request (``lynx_budget.leases.cannot_pay_smallest``): every request would be
    refused, so the tenant is Blocked although its spend is under the cap."""

    remainder_eur: float
    smallest_request_eur: float


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    kind: AuditKind
    message: str


@dataclass(frozen=True)
class Condition:
    type: str  # "PrometheusReachable"
    status: bool
    reason: str  # "SpendRead", or the reason spend could not be read ("Unreachable", "HttpError", "BadAnswer")
    message: str
    last_transition: datetime


@dataclass(frozen=True)
class BudgetStatus:
    state: BudgetState
    spent_eur: float | None
    cap_eur: float
    remaining_eur: float
    day_started_at: datetime
    resets_at: datetime
    last_read_at: datetime | None  # when spend was last read successfully
    spend_as_of: datetime | None
    conditions: tuple[Condition, ...]
    history: tuple[AuditEntry, ...]  # bounded, newest last
    # Keys of the raises in the spec whose arrival was audited (raise_key), and "<key>:expired" for those whose
    # expiry was: each is audited once even when the caller has not removed an expired raise yet.
    audited_raises: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-able, camelCase, RFC 3339 times: the TenantBudget status and the local state file."""
        return {
            "state": self.state,
            "spentEur": self.spent_eur,
            "capEur": self.cap_eur,
            "remainingEur": self.remaining_eur,
            "dayStartedAt": rfc3339(self.day_started_at),
            "resetsAt": rfc3339(self.resets_at),
            "lastReadAt": rfc3339(self.last_read_at),
            "spendAsOf": rfc3339(self.spend_as_of),
            "conditions": [{"type": c.type, "status": "True" if c.status else "False", "reason": c.reason,
                            "message": c.message, "lastTransitionTime": rfc3339(c.last_transition)}
                           for c in self.conditions],
            "history": [{"at": rfc3339(e.at), "kind": e.kind, "message": e.message} for e in self.history],
            "auditedRaises": list(self.audited_raises),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BudgetStatus:
        return cls(
            state=data["state"],
            spent_eur=data.get("spentEur"),
            cap_eur=float(data["capEur"]),
            remaining_eur=float(data["remainingEur"]),
            day_started_at=parse_time(data["dayStartedAt"]),
            resets_at=parse_time(data["resetsAt"]),
            last_read_at=parse_time(data.get("lastReadAt")),
            spend_as_of=parse_time(data.get("spendAsOf")),
            conditions=tuple(Condition(c["type"], c["status"] == "True", c["reason"], c["message"],
                                       parse_time(c["lastTransitionTime"])) for c in data.get("conditions", [])),
            history=tuple(AuditEntry(parse_time(e["at"]), e["kind"], e["message"]) for e in data.get("history", [])),
            audited_raises=tuple(data.get("auditedRaises", [])),
        )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class BudgetEvent:
    type: Literal["Normal", "Warning"]
    reason: str  # CamelCase: "StateChanged", "RaiseAdded", "RaiseExpired", "SpendUnavailable", ...
    message: str


@dataclass(frozen=True)
class Reconciliation:
    status: BudgetStatus
    decision: TenantDecision
    events: tuple[BudgetEvent, ...]  # one per audit entry added
    expired_raises: tuple[TemporaryRaise, ...]  # the caller removes them from the spec


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else utc(moment).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else utc(datetime.fromisoformat(text))


def utc(moment: datetime) -> datetime:
    """In UTC; a time written without a zone (a hand-edited local budgets file) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError(f"`now` must carry a timezone, got the naive {now.isoformat()}")


def raise_key(r: TemporaryRaise) -> str:
    """Stable for one raise, whatever zone its times were written in."""
    identity = "|".join([r.requested_by, rfc3339(r.requested_at), rfc3339(r.expires_at), repr(r.amount_eur), r.reason])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def day_window(timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """[the last local midnight, the next one) in UTC: 24 h, or 23 and 25 h on the days clocks change.

    A midnight that a clock change skips (a zone that springs forward at 00:00) starts the day at the first
    local time that exists; a midnight that happens twice starts it at the first one.
    """
    require_aware(now)
    zone = ZoneInfo(timezone)
    today = now.astimezone(zone).date()
    start = datetime.combine(today, time(0), tzinfo=zone)
    end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def raise_problem(r: TemporaryRaise, now: datetime) -> str | None:
    """Why a raise cannot be applied, or None when it is valid (expiry aside)."""
    requested, expires = utc(r.requested_at), utc(r.expires_at)
    if expires <= requested:
        return f"it expires ({rfc3339(expires)}) before it was asked for ({rfc3339(requested)})"
    if expires - requested > timedelta(hours=MAX_RAISE_HOURS):
        hours = (expires - requested) / timedelta(hours=1)
        return f"it lasts {hours:g} h, more than the {MAX_RAISE_HOURS} h a raise may last"
    if requested > now + RAISE_CLOCK_SKEW:
        return f"it says it was asked for in the future ({rfc3339(requested)})"
    return None


def in_force(r: TemporaryRaise, now: datetime) -> bool:
    return utc(r.expires_at) > now and raise_problem(r, now) is None


def effective_cap(spec: BudgetSpec, now: datetime) -> float:
    """The daily cap plus the raises in force: not expired (expires_at > now) and valid (see raise_problem)."""
    require_aware(now)
    return spec.daily_cap_eur + sum(r.amount_eur for r in spec.raises if in_force(r, now))


def decide_state(spent_eur: float, cap_eur: float, warning_percent: float) -> BudgetState:
    """The state spend alone decides (Paused is the admin's, not the spend's)."""
    if spent_eur >= cap_eur:
        return "Blocked"
    if spent_eur >= cap_eur * warning_percent / 100:
        return "Warning"
    return "Ok"


def remaining(state: BudgetState, spent_eur: float | None, cap_eur: float) -> float:
    if state in ("Blocked", "Paused"):
        return 0.0
    return cap_eur if spent_eur is None else max(cap_eur - spent_eur, 0.0)


def format_eur(amount: float) -> str:
    """Caps read as 5.00 EUR, one request's cost as 0.000123 EUR."""
    if amount == 0:
        return "0 EUR"
    return f"{amount:,.2f} EUR" if abs(amount) >= 1 else f"{amount:.3g} EUR"


def format_local(moment: datetime, timezone: str) -> str:
    local = f"{moment.astimezone(ZoneInfo(timezone)):%Y-%m-%d %H:%M} {timezone}"
    return local if timezone == "UTC" else f"{local} ({utc(moment):%Y-%m-%d %H:%M} UTC)"


class _Audit:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.entries: list[AuditEntry] = []
        self.events: list[BudgetEvent] = []

    def add(self, kind: AuditKind, message: str, warning: bool = False) -> None:
        event_type, reason = EVENT_OF_KIND[kind]
        self.entries.append(AuditEntry(self.now, kind, message))
        self.events.append(BudgetEvent("Warning" if warning else event_type, reason, message))


def describe_raise(r: TemporaryRaise) -> str:
    return (f"+{format_eur(r.amount_eur)} asked by {r.requested_by} ({r.reason!r}), "
            f"expiring {rfc3339(r.expires_at)}")


def audit_raises(spec: BudgetSpec, now: datetime, audited: tuple[str, ...], audit: _Audit
                 ) -> tuple[tuple[TemporaryRaise, ...], tuple[str, ...]]:
    """Audits each raise's arrival (applied or rejected) and expiry once; returns (expired, audited keys)."""
    expired: list[TemporaryRaise] = []
    keys: list[str] = []
    for r in spec.raises:
        key = raise_key(r)
        if utc(r.expires_at) <= now:
            expired.append(r)
            key += ":expired"
            if key not in audited:
                audit.add("raise_expired", f"Temporary raise expired and removed: {describe_raise(r)}.")
        elif key not in audited:
            problem = raise_problem(r, now)
            if problem:
                audit.add("raise_rejected", f"Temporary raise ignored, {problem}: {describe_raise(r)}.")
            else:
                audit.add("raise_added", f"Temporary raise applied: {describe_raise(r)}.")
        keys.append(key)
    return tuple(expired), tuple(dict.fromkeys(keys))


def reachability(last: BudgetStatus | None, spend: SpendReading | ConfirmedSpend | SpendFailure, now: datetime,
                 audit: _Audit) -> Condition:
    previous = last.condition(PROMETHEUS_REACHABLE) if last else None
    spend_read = isinstance(spend, SpendReading)
    if spend_read:
        reason, message = "SpendRead", "Today's spend was read from Prometheus."
    elif isinstance(spend, ConfirmedSpend):
        reason, message = spend.failure.reason, (f"{spend.failure.detail} Decided on the spend the gateways "
                                                 "confirmed to the lease ledger.")
    else:
        reason, message = spend.reason, spend.detail
    changed = previous is None or previous.status != spend_read
    if changed and not spend_read:
        audit.add("spend_unavailable", f"Spend cannot be read ({reason}): {message}")
    elif changed and previous is not None:
        audit.add("spend_restored", "Spend is read from Prometheus again.")
    return Condition(PROMETHEUS_REACHABLE, spend_read, reason, message, now if changed else previous.last_transition)


def cap_words(spec: BudgetSpec, cap_eur: float) -> str:
    raised = cap_eur - spec.daily_cap_eur
    if raised <= 0:
        return f"its daily cap of {format_eur(cap_eur)}"
    return (f"its daily cap of {format_eur(cap_eur)} ({format_eur(spec.daily_cap_eur)} "
            f"+ {format_eur(raised)} in temporary raises)")


def explain_decision(spec: BudgetSpec, state: BudgetState, spent: float | None, cap_eur: float,
                     resets_at: datetime, failure: SpendFailure | None, read_at: datetime | None,
                     unknown_spend: UnknownSpend, unpayable: Unpayable | None = None) -> str:
    """The decision's reason: what happened, in figures, and what the tenant owner can do about it."""
    tenant, cap = spec.tenant, cap_words(spec, cap_eur)
    resets = format_local(resets_at, spec.timezone)
    a_raise = f"a temporary raise from an admin (an amount and a reason, for at most {MAX_RAISE_HOURS} h)"
    unread = "" if failure is None else f"today's spend cannot be read right now ({failure.detail})"
    stale = "" if not unread or spent is None else f" Figures as last read at {rfc3339(read_at)}; {unread}."
    if state == "Paused":
        spent_words = "" if spent is None else f" It has spent {format_eur(spent)} of {cap} today."
        return (f"Paused by an admin: every request from {tenant} is refused until an admin resumes it.{spent_words}"
                f"{stale}")
    if state == "Blocked" and unpayable is not None:
        return (f"Blocked: {tenant} has {format_eur(max(unpayable.remainder_eur, 0.0))} of {cap} left today, as its "
                f"gateways reported their charges, which cannot pay for its smallest request "
                f"({format_eur(unpayable.smallest_request_eur)}). Requests are served again when the day resets at "
                f"{resets}, or sooner with {a_raise}.")
    if state == "Blocked":
        if unread:
            policy = "budgets fail closed" if spent is None and unknown_spend == "closed" else \
                "a blocked tenant stays blocked"
            figures = "" if spent is None else f" It had spent {format_eur(spent)} as last read at {rfc3339(read_at)}."
            return (f"Blocked: {unread}, and {policy} until it can be read.{figures} {tenant} is held to {cap} and "
                    f"is served again once its spend can be read and is under it; the day resets at {resets}.")
        return (f"Blocked: {tenant} has spent {format_eur(spent)} today, reaching {cap}. Requests are served again "
                f"when the day resets at {resets}, or sooner with {a_raise}.")
    if spent is None:
        return (f"Served: {unread}, and budgets fail open, so {tenant} may spend up to {cap} until it can be read. "
                f"The day resets at {resets}.")
    left = format_eur(max(cap_eur - spent, 0.0))
    if state == "Warning":
        share = spent / cap_eur * 100
        return (f"Warning: {tenant} has spent {format_eur(spent)} today, {share:.0f}% of {cap} (warning at "
                f"{spec.warning_percent:g}%), {left} left. At the cap requests are refused until the day resets at "
                f"{resets}; to spend more today, ask for {a_raise}.{stale}")
    return (f"Within budget: {tenant} has spent {format_eur(spent)} of {cap} today, {left} left. The day resets "
            f"at {resets}.{stale}")


def reconcile(spec: BudgetSpec, spend: SpendReading | ConfirmedSpend | SpendFailure, day: tuple[datetime, datetime],
              now: datetime,
              last: BudgetStatus | None, unknown_spend: UnknownSpend = "open", history_limit: int = 20,
              unpayable: Unpayable | None = None) -> Reconciliation:
    """One tenant's decision.

    ``day`` is the tenant's day at ``now``, ``day_window(spec.timezone, now)``, computed once by the caller, which
    reads the spend of the same window. ``spend`` is what the tenant spent in it, or a SpendFailure saying why it
    could not be read (``spend.read_today`` gives either). Then the day's last known figures are kept
    and a Blocked tenant stays Blocked, a new day included; with no figure for the day, ``unknown_spend`` decides
    (open: Ok with the whole cap; closed: Blocked). ``unpayable`` (from the spend leases) blocks a tenant that spend
    alone would leave Ok or in Warning.
    """
    require_aware(now)
    reading = spend if isinstance(spend, SpendReading | ConfirmedSpend) else None
    failure = spend if isinstance(spend, SpendFailure) else getattr(spend, "failure", None)
    day_start, resets_at = day
    audit = _Audit(now)
    new_day = last is not None and last.day_started_at != day_start
    if new_day:
        held = "" if reading is not None or last.state != "Blocked" or spec.paused else \
            "; its spend cannot be read, so it stays Blocked until it can"
        audit.add("day_rollover", f"New budget day from {format_local(day_start, spec.timezone)} to "
                                  f"{format_local(resets_at, spec.timezone)}: spend counts from 0 again{held}.")
    expired, audited = audit_raises(spec, now, last.audited_raises if last else (), audit)
    cap = effective_cap(spec, now)

    today = last if last is not None and not new_day else None
    if isinstance(reading, ConfirmedSpend) and today is not None and today.spent_eur is not None:
        # Both are lower bounds of the true spend (the gateways report to the ledger at renewals only): the larger
        # decides, so the ledger's figure can lift a Blocked a raise has made wrong, never one the spend still holds.
        spent, as_of, read_at = max(reading.spent_eur, today.spent_eur), reading.as_of, today.last_read_at
    elif isinstance(reading, ConfirmedSpend):
        spent, as_of, read_at = reading.spent_eur, reading.as_of, last.last_read_at if last else None
    elif reading is not None:
        spent, as_of, read_at = reading.spent_eur, reading.as_of, now
    elif today is not None:
        spent, as_of, read_at = today.spent_eur, today.spend_as_of, today.last_read_at
    else:
        spent, as_of, read_at = None, None, last.last_read_at if last else None

    state: BudgetState
    if spec.paused:
        state = "Paused"
    elif reading is None and last is not None and last.state == "Blocked":
        state = "Blocked"  # an unknown spend never unblocks
    elif spent is None:
        state = "Ok" if unknown_spend == "open" else "Blocked"
    else:
        state = decide_state(spent, cap, spec.warning_percent)
    unpayable = unpayable if state in ("Ok", "Warning") else None  # another cause of Blocked, or Paused, comes first
    if unpayable is not None:
        state = "Blocked"

    condition = reachability(last, spend, now, audit)
    reason = explain_decision(spec, state, spent, cap, resets_at, failure, read_at, unknown_spend, unpayable)
    previous = last.state if last else None
    if state != previous:
        if state == "Paused":
            audit.add("paused", f"Paused by an admin: {reason}")
        elif previous == "Paused":
            audit.add("resumed", f"Resumed by an admin, now {state}: {reason}")
        else:
            audit.add("state", f"{previous or 'New budget'} -> {state}: {reason.removeprefix(f'{state}: ')}",
                      warning=state in ("Warning", "Blocked"))

    others = tuple(c for c in last.conditions if c.type != PROMETHEUS_REACHABLE) if last else ()
    history = ((last.history if last else ()) + tuple(audit.entries))[-history_limit:] if history_limit > 0 else ()
    status = BudgetStatus(
        state=state, spent_eur=spent, cap_eur=cap, remaining_eur=remaining(state, spent, cap),
        day_started_at=day_start, resets_at=resets_at, last_read_at=read_at, spend_as_of=as_of,
        conditions=(condition, *others), history=history, audited_raises=audited)
    decision = TenantDecision(
        tenant=spec.tenant, state=state, cap_eur=cap, spent_eur=spent, remaining_eur=status.remaining_eur,
        day_started_at=day_start, resets_at=resets_at, spend_as_of=as_of, reason=reason,
        per_request_cap_eur=spec.per_request_cap_eur, cheaper_near_cap=spec.cheaper_near_cap)
    return Reconciliation(status, decision, tuple(audit.events), expired)
