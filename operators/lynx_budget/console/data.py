"""What the console shows, as pure functions of what the stores returned: Prometheus' rows, the trace store's spans,
the budgets and their statuses. No I/O here (``sources`` reads), so every figure's shaping is tested alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from lynx.accounting.pricing import STAGES
from lynx.accounting.spend import COUNTER, CREATED, spend_from_samples
from lynx.telemetry.tracestore import StoredSpan
from lynx.contracts.budgets import BudgetSpec, TenantDecision
from lynx.telemetry.counters import created_times
from lynx_budget.policy import BudgetStatus

# The outcomes (lynx.telemetry.metrics.OUTCOMES) of a request that failed on lynx's side or ran out of time.
FAILED_OUTCOMES = ("failed", "deadline")
# The span attributes the services set on a charged request's span (lynx.accounting.ledger, pricing, orchestrator).
OUTCOME, TENANT, MODEL, COST = "lynx.outcome", "lynx.tenant", "gen_ai.request.model", "lynx.cost.eur"
STAGE_COST = "lynx.cost.stage.{}.eur"


@dataclass(frozen=True)
class Filters:
    """The overview's filters (GET query parameters): empty means every tenant, every model."""

    tenant: str = ""
    model: str = ""

    def keeps(self, tenant: str, model: str) -> bool:
        return (not self.tenant or tenant == self.tenant) and (not self.model or model == self.model)


def spend_by_label(rows: list[dict], label: str, day_start: datetime, now: datetime,
                   counter: tuple[str, str] = (COUNTER, CREATED)) -> dict[str, float]:
    """Spend since ``day_start`` per value of ``label`` (tenant, model_name), from the raw samples of every series of
    the cost counter and its creation times: the controller's exact reading (``spend_from_samples``) per group.
    ``counter``: another counter's names (``_total``, ``_created``), read the same way (tokens, requests)."""
    created = created_times(rows, counter[1])
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["metric"].get("__name__") == counter[0]:
            groups[row["metric"].get(label, "unknown")].append(row)
    spent = {value: spend_from_samples(series, created, day_start, now).spent_eur for value, series in groups.items()}
    return dict(sorted(((value, eur) for value, eur in spent.items() if eur > 0), key=lambda item: -item[1]))


def filtered_rows(rows: list[dict], filters: Filters) -> list[dict]:
    return [row for row in rows if filters.keeps(row["metric"].get("tenant", ""), row["metric"].get("model_name", ""))]


@dataclass(frozen=True)
class RequestSummary:
    """A charged request as its trace holds it: never its prompt or completion."""

    trace_id: str
    started_at: datetime
    tenant: str
    model: str
    outcome: str
    cost_eur: float | None
    stage_costs: dict[str, float]

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES


def nanos_to_time(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, UTC)


def charged_requests(spans: Iterable[StoredSpan]) -> list[RequestSummary]:
    """The requests the ledger charged (the spans carrying an outcome), newest first."""
    requests = [RequestSummary(
        trace_id=span.trace_id, started_at=nanos_to_time(span.start_unix_nano),
        tenant=str(span.attributes.get(TENANT, "")), model=str(span.attributes.get(MODEL, "")),
        outcome=str(span.attributes[OUTCOME]),
        cost_eur=float(span.attributes[COST]) if COST in span.attributes else None,
        stage_costs={stage: float(span.attributes[STAGE_COST.format(stage)]) for stage in STAGES
                     if STAGE_COST.format(stage) in span.attributes})
        for span in spans if OUTCOME in span.attributes]
    return sorted(requests, key=lambda r: r.started_at, reverse=True)


def last_failures(requests: list[RequestSummary], filters: Filters, limit: int = 10) -> list[RequestSummary]:
    return [r for r in requests if r.failed and filters.keeps(r.tenant, r.model)][:limit]


def stage_spend(requests: Iterable[RequestSummary]) -> dict[str, float]:
    """EUR per pipeline stage summed over ``requests`` (those the trace store holds)."""
    totals = dict.fromkeys(STAGES, 0.0)
    for request in requests:
        for stage, eur in request.stage_costs.items():
            totals[stage] += eur
    return totals


def trace_tenants(spans: Iterable[StoredSpan]) -> set[str]:
    """The tenants a trace's spans were charged to: who may open it besides the admin."""
    return {str(span.attributes[TENANT]) for span in spans if TENANT in span.attributes}


@dataclass(frozen=True)
class WaterfallRow:
    span_id: str
    depth: int
    service: str
    name: str
    offset_ms: float
    duration_ms: float
    cost_eur: float | None
    stage_costs: dict[str, float]


def waterfall(spans: list[StoredSpan]) -> list[WaterfallRow]:
    """The trace's spans in tree order (each after its parent, siblings by start), timed from the trace's start. A
    span whose parent the store does not hold is drawn as a root."""
    if not spans:
        return []
    known = {span.span_id for span in spans}
    children: dict[str, list[StoredSpan]] = defaultdict(list)
    for span in spans:
        children[span.parent_span_id if span.parent_span_id in known else ""].append(span)
    origin = min(span.start_unix_nano for span in spans)
    rows: list[WaterfallRow] = []

    def visit(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_unix_nano):
            end = max(span.end_unix_nano, span.start_unix_nano)
            rows.append(WaterfallRow(
                span.span_id, depth, span.service, span.name, (span.start_unix_nano - origin) / 1e6,
                (end - span.start_unix_nano) / 1e6,
                float(span.attributes[COST]) if COST in span.attributes else None,
                {stage: float(span.attributes[STAGE_COST.format(stage)]) for stage in STAGES
                 if STAGE_COST.format(stage) in span.attributes}))
            visit(span.span_id, depth + 1)

    visit("", 0)
    return rows


@dataclass(frozen=True)
class CapUse:
    tenant: str
    state: str
    spent_eur: float
    cap_eur: float
    percent: float
    warning_percent: float


def caps_approaching(budgets: list[BudgetSpec], statuses: dict[str, BudgetStatus], filters: Filters) -> list[CapUse]:
    """The budgets whose spend today reached their warning threshold, fullest first."""
    uses = []
    for spec in budgets:
        status = statuses.get(spec.tenant)
        if status is None or status.spent_eur is None or not filters.keeps(spec.tenant, ""):
            continue
        percent = 100 * status.spent_eur / status.cap_eur if status.cap_eur > 0 else 100.0
        if percent >= spec.warning_percent:
            uses.append(CapUse(spec.tenant, status.state, status.spent_eur, status.cap_eur, percent,
                               spec.warning_percent))
    return sorted(uses, key=lambda use: -use.percent)


def decision_of(tenant: str, status: BudgetStatus | None) -> TenantDecision | None:
    """The controller's last decision on the tenant as the gateway's usage report takes it."""
    if status is None:
        return None
    return TenantDecision(tenant=tenant, state=status.state, cap_eur=status.cap_eur, spent_eur=status.spent_eur,
                          remaining_eur=status.remaining_eur, day_started_at=status.day_started_at,
                          resets_at=status.resets_at, spend_as_of=status.spend_as_of,
                          reason=status.history[-1].message if status.history else "")


def traced_share(traced: float | None, served: float | None) -> str | None:
    """How many of the requests served a per-request list can show (the trace store holds the sampled ones)."""
    if traced is None or served is None:
        return None
    if traced >= served:
        return f"Every request served in the window was traced ({served:.0f}): the lists can show each of them."
    return (f"Traces are sampled: the lists show at most {traced:.0f} of the {served:.0f} requests served "
            f"({100 * traced / served:.0f} %).")
