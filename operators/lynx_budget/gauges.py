"""Each tenant's budget as the controller's gauges (``budget_metrics()``, the spend leases' ``lease_metrics()``): one
place for the operator and the local loop."""

from __future__ import annotations

import contextlib
import typing
from datetime import datetime

from lynx.contracts.budgets import BudgetState
from lynx.telemetry.metrics import budget_metrics, lease_metrics
from lynx_budget.policy import BudgetStatus

STATES = typing.get_args(BudgetState)


def show(tenant: str, status: BudgetStatus) -> None:
    """The tenant's figures and state; a spend that could not be read today is absent, never a stale value."""
    metrics = budget_metrics()
    if status.spent_eur is None:
        with contextlib.suppress(KeyError):
            metrics.spent.remove(tenant)
    else:
        metrics.spent.labels(tenant).set(status.spent_eur)
    metrics.cap.labels(tenant).set(status.cap_eur)
    metrics.remaining.labels(tenant).set(status.remaining_eur)
    metrics.resets_at.labels(tenant).set(status.resets_at.timestamp())
    for state in STATES:
        metrics.state.labels(tenant, state).set(1 if state == status.state else 0)


def withdraw(tenant: str) -> None:
    """A tenant whose budget is gone: none of its series remain."""
    metrics = budget_metrics()
    for gauge in (metrics.spent, metrics.cap, metrics.remaining, metrics.resets_at):
        with contextlib.suppress(KeyError):
            gauge.remove(tenant)
    for state in STATES:
        with contextlib.suppress(KeyError):
            metrics.state.remove(tenant, state)


def count_read(read: bool, now: datetime) -> None:
    """One spend read: its time (``now``, the decision's clock, the one the status' lastReadAt is stamped with) when
    it succeeded, one more failure when not. An alert compares the time with Prometheus' ``time()``."""
    metrics = budget_metrics()
    if read:
        metrics.last_read.set(now.timestamp())
    else:
        metrics.read_failures.inc()


def show_holdings(tenant: str, held_eur: float, confirmed_eur: float) -> None:
    """The lease ledger's figures for the tenant's day: held (confirmed + outstanding) and confirmed."""
    metrics = lease_metrics()
    metrics.held.labels(tenant).set(held_eur)
    metrics.confirmed.labels(tenant).set(confirmed_eur)


def withdraw_holdings(tenant: str) -> None:
    metrics = lease_metrics()
    for gauge in (metrics.held, metrics.confirmed):
        with contextlib.suppress(KeyError):
            gauge.remove(tenant)


def count_lease_request(outcome: str, seconds: float) -> None:
    metrics = lease_metrics()
    metrics.requests.labels(outcome).inc()
    metrics.duration.observe(seconds)
