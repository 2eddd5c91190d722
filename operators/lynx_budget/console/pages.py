"""Each page's content, read from the console's sources and shaped by ``data``: what the templates show. Blocking
(the clients are synchronous): the routes call these in a thread. A store that cannot be read leaves its part of the
page empty with a sentence saying why, never the whole page."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from lynx.contracts.budgets import MAX_RAISE_HOURS
from lynx.accounting.usage import utc_midnight
from lynx.service.errors import LynxError
from lynx_budget.admin import explain
from lynx_budget.console import charts
from lynx_budget.console.console import Console
from lynx_budget.console.data import (
    Filters, caps_approaching, decision_of, filtered_rows, last_failures, spend_by_label, stage_spend, trace_tenants,
    traced_share, waterfall,
)
from lynx_budget.console.sessions import Session
from lynx_budget.console.sources import TREND_DAYS, Unreadable
from lynx_budget.policy import in_force, raise_problem

T = TypeVar("T")


def attempt(read: Callable[[], T], problems: list[str], default: T) -> T:
    try:
        return read()
    except Unreadable as error:
        problems.append(str(error))
        return default


def overview(console: Console, filters: Filters) -> dict:
    now, problems = console.now(), []
    sources = console.sources
    rows = filtered_rows(attempt(lambda: sources.today_rows(now), problems, []), filters)
    by_tenant = spend_by_label(rows, "tenant", utc_midnight(now), now)
    by_model = spend_by_label(rows, "model_name", utc_midnight(now), now)
    requests = attempt(lambda: sources.recent_requests(now), problems, [])
    store = console.store()
    trends = []
    for days in TREND_DAYS:
        eur = attempt(lambda days=days: sources.eur_daily(filters, days, now), problems, [])
        tokens = attempt(lambda days=days: sources.tokens_daily(filters, days, now), problems, [])
        trends.append({"days": days, "eur": charts.daily_chart(eur, f"EUR per day, last {days} days", "EUR"),
                       "tokens": charts.daily_chart(tokens, f"Tokens per day, last {days} days", "tokens"),
                       "eur_total": sum(v for _, v in eur), "tokens_total": sum(v for _, v in tokens)})
    return {
        "now": now, "filters": filters, "problems": list(dict.fromkeys(problems)),
        "by_tenant": by_tenant, "by_model": by_model,
        "tenant_chart": charts.bar_chart(list(by_tenant), list(by_tenant.values()), "Spend today by tenant", "EUR"),
        "model_chart": charts.bar_chart(list(by_model), list(by_model.values()), "Spend today by model", "EUR"),
        "failures": last_failures(requests, filters),
        "approaching": caps_approaching(store.list(), store.statuses(), filters),
        "budgets": [spec.tenant for spec in store.list()],
        "trends": trends,
        "sampling": traced_share(*sources.served_and_traced(now)),
    }


def tenant(console: Console, session: Session, tenant_id: str) -> dict:
    now, problems = console.now(), []
    store = console.store()
    spec, status = store.get(tenant_id), store.status(tenant_id)
    try:
        usage = console.sources.usage.report(tenant_id, decision_of(tenant_id, status), now)
    except LynxError as error:
        usage = None
        problems.append(error.message)
    requests = [r for r in attempt(lambda: console.sources.recent_requests(now), problems, []) if r.tenant == tenant_id]
    today = [r for r in requests if r.started_at >= (status.day_started_at if status else utc_midnight(now))]
    stages = stage_spend(today)
    context = {
        "now": now, "tenant": tenant_id, "spec": spec, "status": status, "usage": usage,
        "problems": list(dict.fromkeys(problems)), "requests": requests[:50],
        "stages": stages, "stage_requests": len(today),
        "stage_chart": charts.bar_chart(list(stages), list(stages.values()), "Spend today by stage (traced requests)",
                                        "EUR"),
        "sampling": traced_share(*console.sources.served_and_traced(now)),
        "max_raise_hours": MAX_RAISE_HOURS,
    }
    if session.role == "admin" and spec is not None:
        context["why"] = explain(spec, status, now)
        context["raises"] = [{"raise": r, "in_force": in_force(r, now), "problem": raise_problem(r, now)}
                             for r in spec.raises]
    return context


def trace(console: Console, trace_id: str) -> dict:
    """The trace's spans as a waterfall, and the tenants they were charged to (who may see it)."""
    spans = console.sources.trace(trace_id)
    rows = waterfall(spans)
    return {"trace_id": trace_id, "rows": rows, "tenants": trace_tenants(spans), "span_count": len(spans),
            "chart": charts.waterfall_chart(rows, f"Trace {trace_id}") if rows else ""}
