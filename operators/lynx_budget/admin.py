"""An admin's quick actions on a budget, as pure functions of the spec: the CLI applies them to a TenantBudget
resource or to the embedded default's local budgets file, and reads the status back for `explain` and the CSV
(``export_csv`` adds the tenants without a budget that Prometheus holds spend for)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from lynx.contracts.budgets import MAX_RAISE_HOURS, BudgetSpec, TemporaryRaise
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError
from lynx_budget.policy import (
    PROMETHEUS_REACHABLE,
    BudgetStatus,
    SpendReading,
    day_window,
    effective_cap,
    format_eur,
    format_local,
    in_force,
    raise_problem,
    require_aware,
    rfc3339,
    utc,
)
from lynx_budget.spend import charged_tenants, read_spend

if TYPE_CHECKING:
    from lynx_budget.store import BudgetStore

# The command line's options for the fields of a budget and of a raise, named when it refuses their values.
SPEC_OPTIONS = {"tenant": "the tenant id", "daily_cap_eur": "--cap", "timezone": "--timezone",
                "warning_percent": "--warning", "per_request_cap_eur": "--per-request-cap",
                "unreachable_allowance": "--unreachable-allowance"}
RAISE_OPTIONS = {"amount_eur": "--amount", "reason": "--reason", "requested_by": "--by"}
# The day of a tenant without a budget (so without a timezone of its own): a budget's default.
UNBUDGETED_TIMEZONE = "UTC"
CSV_COLUMNS = ("tenant", "state", "spent_eur", "cap_eur", "remaining_eur", "day_started_at", "resets_at")


def pause(spec: BudgetSpec) -> BudgetSpec:
    return spec.model_copy(update={"paused": True})


def resume(spec: BudgetSpec) -> BudgetSpec:
    return spec.model_copy(update={"paused": False})


def add_raise(spec: BudgetSpec, amount_eur: float, hours: float, reason: str, requested_by: str,
              now: datetime) -> BudgetSpec:
    """The spec with a temporary raise of ``amount_eur`` for ``hours`` from ``now``. ValueError when it cannot be."""
    require_aware(now)
    if not 0 < hours <= MAX_RAISE_HOURS:
        raise ValueError(f"a temporary raise lasts more than 0 and at most {MAX_RAISE_HOURS} hours, not {hours:g}")
    new = TemporaryRaise(amount_eur=amount_eur, expires_at=utc(now) + timedelta(hours=hours), reason=reason,
                         requested_by=requested_by, requested_at=utc(now))  # its ValidationError is a ValueError
    return spec.model_copy(update={"raises": [*spec.raises, new]})


def explain(spec: BudgetSpec, status: BudgetStatus | None, now: datetime) -> str:
    """Why the tenant is in its state, in plain words: the decision, the cap and its raises, the spend reading."""
    require_aware(now)
    lines = [f"Tenant {spec.tenant}: daily cap {format_eur(spec.daily_cap_eur)}, day starting at midnight "
             f"{spec.timezone}, warning at {spec.warning_percent:g}%."]
    if spec.paused:
        lines.append("Paused by an admin: every request is refused until an admin resumes it.")
    for r in spec.raises:
        problem = raise_problem(r, now)
        if in_force(r, now):
            lines.append(f"Raise in force: +{format_eur(r.amount_eur)} until {rfc3339(r.expires_at)}, "
                         f"asked by {r.requested_by}: {r.reason}")
        elif problem:
            lines.append(f"Raise ignored, {problem}: +{format_eur(r.amount_eur)} asked by {r.requested_by}.")
        else:
            lines.append(f"Raise expired at {rfc3339(r.expires_at)} (removed at the next reconciliation): "
                         f"+{format_eur(r.amount_eur)} asked by {r.requested_by}.")
    if status is None:
        lines.append(f"No decision yet: the budget controller has not reconciled this tenant. Its cap today is "
                     f"{format_eur(effective_cap(spec, now))}.")
        return "\n".join(lines)
    lines.append(f"State: {status.state}.")
    if now >= status.resets_at:
        lines.append(f"This decision is from the day that ended at {format_local(status.resets_at, spec.timezone)}; "
                     "the controller has not reconciled the new day yet.")
    elif status.spent_eur is not None:
        lines.append(f"Spent today: {format_eur(status.spent_eur)} of {format_eur(status.cap_eur)} "
                     f"({format_eur(status.remaining_eur)} left), as of {rfc3339(status.spend_as_of)}.")
    else:
        lines.append(f"Spent today: unknown, no reading yet today; cap {format_eur(status.cap_eur)}.")
    lines.append(f"The day resets at {format_local(status.resets_at, spec.timezone)}.")
    reachable = status.condition(PROMETHEUS_REACHABLE)
    if reachable is not None and not reachable.status:
        lines.append(f"Spend cannot be read since {rfc3339(reachable.last_transition)} ({reachable.reason}): "
                     f"{reachable.message}")
    if status.state == "Blocked" and reachable is not None and not reachable.status:
        lines.append("A blocked tenant stays Blocked until its spend can be read again.")
    elif status.state == "Blocked":
        lines.append(f"To serve it before the reset, add a temporary raise (an amount, a reason, at most "
                     f"{MAX_RAISE_HOURS} h).")
    if status.history:
        lines.append("Recent history:")
        lines += [f"  {rfc3339(e.at)} {e.kind}: {e.message}" for e in status.history[-5:]]
    return "\n".join(lines)


def amount(eur: float) -> str:
    return f"{eur:.10g}"  # exact enough for money, without float noise (0.0188, not 0.018800000000000004)


def spend_csv(rows: list[tuple[BudgetSpec, BudgetStatus | None]],
              unbudgeted: Sequence[tuple[str, SpendReading]] = (), now: datetime | None = None) -> str:
    """Today's spend by tenant, one line each (empty cells where no decision was made yet or spend is unknown); the
    tenants without a budget (``unbudgeted``: their spend since ``now``'s UTC midnight) with no state and no cap."""
    lines: list[list[str]] = []
    for spec, status in rows:
        if status is None:
            lines.append([spec.tenant, "", "", amount(spec.daily_cap_eur), "", "", ""])
            continue
        spent = "" if status.spent_eur is None else amount(status.spent_eur)
        lines.append([spec.tenant, status.state, spent, amount(status.cap_eur), amount(status.remaining_eur),
                      rfc3339(status.day_started_at), rfc3339(status.resets_at)])
    if unbudgeted:
        day_start, resets = day_window(UNBUDGETED_TIMEZONE, now)
        lines += [[tenant, "", amount(spend.spent_eur), "", "", rfc3339(day_start), rfc3339(resets)]
                  for tenant, spend in unbudgeted]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(sorted(lines, key=lambda line: line[0]))
    return out.getvalue()


def export_csv(store: BudgetStore, prometheus: PrometheusClient, now: datetime) -> tuple[str, str | None]:
    """(the CSV, a problem or None): every budget with its last decision, and every tenant without one that Prometheus
    holds spend for today. With Prometheus unreadable, the budgets alone, and the problem says so."""
    statuses = store.statuses()
    budgeted = [(spec, statuses.get(spec.tenant)) for spec in store.list()]
    with_budget = {spec.tenant for spec, _ in budgeted}
    day_start, _ = day_window(UNBUDGETED_TIMEZONE, now)
    try:
        readings = [(tenant, read_spend(prometheus, tenant, day_start, now))
                    for tenant in charged_tenants(prometheus, day_start, now) if tenant not in with_budget]
    except PrometheusError as error:
        return spend_csv(budgeted), (f"tenants without a budget are left out, as their spend could not be read "
                                     f"({error.detail}); pass --prometheus with the URL of the Prometheus that "
                                     "scrapes the gateways")
    return spend_csv(budgeted, [(tenant, spend) for tenant, spend in readings if spend.spent_eur > 0], now), None
