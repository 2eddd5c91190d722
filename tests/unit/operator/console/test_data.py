"""The console's figures shaped from what Prometheus and the trace store return (made-up rows and spans)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lynx.contracts.budgets import BudgetSpec
from lynx.telemetry.tracestore import StoredSpan
from lynx_budget.console.data import (
    Filters, caps_approaching, charged_requests, decision_of, filtered_rows, last_failures, spend_by_label,
    stage_spend, trace_tenants, traced_share, waterfall,
)
from lynx_budget.policy import BudgetStatus

DAY_START = datetime(2026, 6, 10, tzinfo=UTC)
NOW = DAY_START + timedelta(hours=2)
T0 = DAY_START.timestamp()


def counter(tenant: str, model: str, values: list[tuple[float, float]], created: float) -> list[dict]:
    labels = {"tenant": tenant, "model_name": model, "outcome": "completed", "instance": "gw:1"}
    return [{"metric": {"__name__": "lynx_tenant_cost_eur_total", **labels},
             "values": [[at, str(value)] for at, value in values]},
            {"metric": {"__name__": "lynx_tenant_cost_eur_created", **labels},
             "values": [[at, str(created)] for at, _ in values]}]


ROWS = [
    *counter("acme", "small", [(T0 - 60, 1.0), (T0 + 60, 1.5), (T0 + 120, 2.0)], T0 - 3600),  # 1.0 today
    *counter("acme", "large", [(T0 + 60, 0.25)], T0 + 30),  # created today: counts whole
    *counter("globex", "small", [(T0 + 60, 0.5)], T0 + 10),
]


def test_todays_spend_is_grouped_by_tenant_and_by_model():
    assert spend_by_label(ROWS, "tenant", DAY_START, NOW) == {"acme": 1.25, "globex": 0.5}
    assert spend_by_label(ROWS, "model_name", DAY_START, NOW) == {"small": 1.5, "large": 0.25}


def test_filters_keep_the_rows_of_a_tenant_and_a_model():
    kept = filtered_rows(ROWS, Filters(tenant="acme", model="small"))
    assert spend_by_label(kept, "tenant", DAY_START, NOW) == {"acme": 1.0}
    assert filtered_rows(ROWS, Filters()) == ROWS


def span(trace: str, span_id: str, parent: str, start_ms: float, end_ms: float, **attributes) -> StoredSpan:
    return StoredSpan(trace, span_id, parent, f"span {span_id}", "lynx-gateway", attributes=attributes,
                      start_unix_nano=int(T0) * 10**9 + int(start_ms * 1e6), end_unix_nano=int(T0) * 10**9 + int(end_ms * 1e6))


def charged(trace: str, start_ms: float, tenant: str, outcome: str, cost: float) -> StoredSpan:
    return span(trace, f"{trace}-gen", f"{trace}-root", start_ms, start_ms + 10, **{
        "lynx.outcome": outcome, "lynx.tenant": tenant, "gen_ai.request.model": "small", "lynx.cost.eur": cost,
        "lynx.cost.stage.decode.eur": cost * 0.75, "lynx.cost.stage.tokenize.eur": cost * 0.25})


def test_charged_requests_newest_first_and_the_failures_among_them():
    spans = [charged("t1", 0, "acme", "completed", 1e-4), charged("t2", 100, "acme", "failed", 2e-4),
             charged("t3", 200, "globex", "deadline", 3e-4), span("t1", "t1-root", "", 0, 20)]
    requests = charged_requests(spans)
    assert [r.trace_id for r in requests] == ["t3", "t2", "t1"]  # the root span holds no outcome: not a request
    assert [r.trace_id for r in last_failures(requests, Filters())] == ["t3", "t2"]
    assert [r.trace_id for r in last_failures(requests, Filters(tenant="acme"))] == ["t2"]
    assert len(last_failures(requests * 10, Filters())) == 10
    assert stage_spend(requests[1:2])["decode"] == 2e-4 * 0.75 and stage_spend(requests)["prefill"] == 0.0
    assert trace_tenants(spans) == {"acme", "globex"}


def test_a_waterfall_puts_children_under_their_parent_timed_from_the_traces_start():
    spans = [span("t", "c2", "root", 30, 40), span("t", "root", "", 5, 50), span("t", "c1", "root", 10, 20),
             span("t", "orphan", "lost", 45, 47), span("t", "g", "c1", 12, 15, **{"lynx.cost.eur": 0.5})]
    rows = waterfall(spans)
    assert [(r.span_id, r.depth) for r in rows] == [("root", 0), ("c1", 1), ("g", 2), ("c2", 1), ("orphan", 0)]
    assert rows[0].offset_ms == 0 and rows[1].offset_ms == 5.0 and rows[1].duration_ms == 10.0
    assert rows[2].cost_eur == 0.5 and rows[0].cost_eur is None


def status(spent: float | None, cap: float, state: str = "Ok") -> BudgetStatus:
    return BudgetStatus(state=state, spent_eur=spent, cap_eur=cap, remaining_eur=max(cap - (spent or 0), 0),
                        day_started_at=DAY_START, resets_at=DAY_START + timedelta(days=1), last_read_at=NOW,
                        spend_as_of=NOW, conditions=(), history=(), audited_raises=())


def test_caps_approaching_are_those_at_or_past_their_warning_fullest_first():
    budgets = [BudgetSpec(tenant=t, daily_cap_eur=1.0, warning_percent=80) for t in ("a", "b", "c", "d")]
    statuses = {"a": status(0.79, 1.0), "b": status(0.8, 1.0, "Warning"), "c": status(1.2, 1.0, "Blocked"),
                "d": status(None, 1.0)}
    assert [(use.tenant, round(use.percent)) for use in caps_approaching(budgets, statuses, Filters())] == [
        ("c", 120), ("b", 80)]
    assert [use.tenant for use in caps_approaching(budgets, statuses, Filters(tenant="b"))] == ["b"]


def test_the_controllers_status_as_the_usage_reports_decision():
    decision = decision_of("a", status(0.5, 2.0, "Warning"))
    assert (decision.state, decision.cap_eur, decision.remaining_eur) == ("Warning", 2.0, 1.5)
    assert decision_of("a", None) is None


def test_the_lists_say_how_many_of_the_requests_served_they_can_show():
    assert traced_share(None, 10) is None and traced_share(10, None) is None  # Prometheus unreadable: nothing said
    assert "Every request served in the window was traced (10)" in traced_share(10, 10)
    assert "(0)" in traced_share(0, 0)
    assert "at most 25 of the 100 requests served (25 %)" in traced_share(25, 100)
