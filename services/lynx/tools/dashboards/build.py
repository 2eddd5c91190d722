"""The dashboards, built with the Grafana Foundation SDK (panels.py): ``lynx dashboards build`` writes them to the
top-level dashboards/ folder.

capstone: the ten panels of the design. serving: the six core metrics and USE views. tenants: the Admin
Overview of the per-tenant daily budgets. Every panel's queries are run against a real Prometheus by
tests/integration/test_dashboards.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lynx.tools.dashboards.panels import (
    COMPLETION_ENDPOINTS, EXACT, bars, bucket_histogram, dashboard, label_filter, on_right_axis, over, pie, quantiles,
    stacked_bars_by_row, stat, status, table, target, text, timeseries,
)

REPO = Path(__file__).resolve().parents[4]
DASHBOARDS_DIR = REPO / "dashboards"
COSTS_DOC = REPO / "docs" / "COSTS.md"
CPQU_START, CPQU_END = "<!-- cpqu:start -->", "<!-- cpqu:end -->"
TRACES_KEPT = "Trace sample rate"
TRACE_SAMPLING = (f"Traces (exemplars, Jaeger links) are sampled: the \"{TRACES_KEPT}\" panel shows the sampler the "
                  "services run and the share of requests it traced (docs/COSTS.md, Sampling).")
CONFIGURED_SAMPLING = "max by (sampler) (lynx_trace_sampler_ratio)"


def trace_sampling():
    """The sampler in force and what it kept, measured: beside every panel fed by traces."""
    served = f"sum(rate(lynx_request_total{{{COMPLETION_ENDPOINTS}}}[$__rate_interval]))"
    traced = f"sum(rate(lynx_traced_requests_total{{{COMPLETION_ENDPOINTS}}}[$__rate_interval]))"
    return timeseries(
        TRACES_KEPT,
        "Completion requests traced / requests served, measured at the gateway (server spans the sampler kept, "
        "against lynx_request_total), and the rate the services' sampler is configured with (OTEL_TRACES_SAMPLER "
        "and OTEL_TRACES_SAMPLER_ARG, the chart's otlp.sampler and otlp.samplerArg), read from the running "
        "services. Metrics are exact whatever this shows; trace-fed panels (exemplars, orphan spans) see only the "
        "traced share.",
        [target(f"{traced} / {served}", "traced / served (measured)"),
         target(CONFIGURED_SAMPLING, "configured: {{sampler}}", ref="B")], "percentunit")


def cpqu_table(costs_doc: Path = COSTS_DOC) -> str:
    """The CpQU table as docs/COSTS.md holds it (the batch command writes it; dashboards only read it)."""
    document = costs_doc.read_text()
    match = re.search(re.escape(CPQU_START) + r"(.*?)" + re.escape(CPQU_END), document, re.S)
    if not match:
        raise ValueError(f"{costs_doc} has no {CPQU_START} ... {CPQU_END} section")
    return match.group(1).strip()


def capstone(costs_doc: Path = COSTS_DOC) -> dict:
    requests = f"lynx_request_total{{{COMPLETION_ENDPOINTS}}}"
    errors = f'sum(rate(lynx_request_total{{{COMPLETION_ENDPOINTS},status=~"5.."}}[$__rate_interval])) or vector(0)'
    durations = "lynx_request_duration_seconds_{}{{" + COMPLETION_ENDPOINTS + "}}"
    per_request = f"scalar(sum(rate({durations.format('count')}[$__rate_interval])))"
    stage_seconds = "sum by (stage) (rate(lynx_stage_duration_seconds_sum[$__rate_interval]))"
    unstaged = (f"sum(rate({durations.format('sum')}[$__rate_interval]))"
                " - sum(rate(lynx_stage_duration_seconds_sum[$__rate_interval]))")
    stage_p95 = "histogram_quantile(0.95, sum by (le, stage) (rate(lynx_stage_duration_seconds_bucket[$__range])))"
    return dashboard("lynx-capstone", "lynx / capstone",
                     "Health, latency and cost of the lynx pipeline; every number traces back to one source.", [
        timeseries("Request rate", f"Completion requests per second at the gateway. {EXACT}",
                   [target(f"sum(rate({requests}[$__rate_interval]))", "requests/s")], "reqps"),
        on_right_axis(timeseries(
            "Error rate", "Completion requests answered 5xx per second, and their share of all completion requests "
            f"(right axis, red line at 1 %). {EXACT}",
            [target(errors, "5xx/s"), target(f"({errors}) / sum(rate({requests}[$__rate_interval]))", "5xx share",
                                             ref="B")], "reqps"), "B", "percentunit", red_above=0.01),
        timeseries("Request duration p50 / p95 / p99", f"Gateway arrival to last byte, streams included. {EXACT}",
                   quantiles("lynx_request_duration_seconds", COMPLETION_ENDPOINTS), "s"),
        timeseries("Per-stage latency (mean per request, stacked bars)",
                   "Mean wall time per completion request of each stage as the gateway saw it, a bar per step split "
                   "by stage; `other` is the rest of the request's duration (the gateway's own work and the hops "
                   f"between services), so a bar adds up to the mean request duration. {EXACT}",
                   [target(f"({stage_seconds} / {per_request}) or label_replace(({unstaged}) / {per_request}, "
                           '"stage", "other", "", "")', "{{stage}}")], "s", stacked=True, bars=True),
        stacked_bars_by_row(
            "Latency budget vs actual (p95 per stage)",
            "Two stacked bars side by side: the budget of each stage set in LYNX_GATEWAY_STAGE_BUDGETS_SECONDS, and "
            "each stage's p95 over the dashboard's time range; a segment per stage. (Stacked p95s are not the "
            f"request's p95: compare segment with segment.) {EXACT}",
            [target("max by (stage) (lynx_stage_latency_budget_seconds)", instant=True, table=True),
             target(stage_p95, ref="B", instant=True, table=True)], "s",
            {"Value #A": "budget", "Value #B": "actual p95"}, "stage"),
        bucket_histogram(
            "Cost per request (last hour)",
            "Requests per cost bucket (EUR) over the last hour, p50 and p95 marked in the legend (interpolated "
            f"within their bucket). {EXACT}",
            target("sum by (le) (increase(lynx_cost_eur_per_request_bucket[1h]))", "{{le}}", instant=True,
                   heatmap=True),
            quantiles("lynx_cost_eur_per_request", "", qs=(0.5, 0.95), window="1h", instant=True, first_ref="B"),
            "currencyEUR"),
        pie("Cost decomposition per stage",
            "EUR attributed to each stage over the dashboard's time range; the identity check's status is beside "
            f"it. {EXACT}",
            [target("sum by (stage) (increase(lynx_cost_stage_eur_total[$__range]))", "{{stage}}", instant=True)],
            "currencyEUR"),
        stat("Cost identity violations (1h)",
             "The identity check's status: requests whose stages disagreed with an independent clock or counter in "
             f"the last hour (docs/COSTS.md). OK when 0. {EXACT}",
             [target("sum(increase(lynx_cost_identity_violations_total[1h]))", "violations")], "short",
             red_above=0.5, mappings=status("OK")),
        text("Cost per quality unit (CpQU)",
             "Static: copied from docs/COSTS.md, where `lynx cpqu` writes it (cost from Prometheus divided by "
             "correct answers on the fixed question set). This panel never recomputes it.",
             cpqu_table(costs_doc)),
        stat("Orphan spans", "Spans whose parent is missing from their trace, among the traces the auditor read "
             f"from the trace store (Jaeger) in its lookback window. Must be 0. {TRACE_SAMPLING}",
             [target("max(lynx_trace_orphan_spans)", "orphan spans")], "short", red_above=0.5),
        trace_sampling(),
    ])


def serving() -> dict:
    job = 'job=~"$job"'
    return dashboard("lynx-serving", "lynx / serving",
                     "The six core metrics and the USE view of every lynx service.", [
        timeseries("Requests by endpoint and status", f"lynx_request_total. {EXACT}",
                   [target(f"sum by (job, endpoint, status) (rate(lynx_request_total{{{job}}}[$__rate_interval]))",
                           "{{job}} {{endpoint}} {{status}}")], "reqps"),
        timeseries("Request duration p95 by endpoint", f"lynx_request_duration_seconds. {EXACT}",
                   quantiles("lynx_request_duration_seconds", job, by="endpoint", qs=(0.95,)), "s"),
        timeseries("Tokens per second", f"lynx_tokens_total by kind (prompt, completion), every outcome. {EXACT}",
                   [target("sum by (kind) (rate(lynx_tokens_total[$__rate_interval]))", "{{kind}}")], "short"),
        timeseries("Cost per 1k output tokens: mean and p95",
                   "EUR per 1000 completion tokens over charged requests (every outcome with at least one token): "
                   f"the mean is sum / count, the p95 comes from the histogram's buckets. {EXACT}",
                   [target("sum(rate(lynx_cost_eur_per_1k_output_tokens_sum[$__rate_interval]))"
                           " / sum(rate(lynx_cost_eur_per_1k_output_tokens_count[$__rate_interval]))", "mean"),
                    target("histogram_quantile(0.95, sum by (le) "
                           "(rate(lynx_cost_eur_per_1k_output_tokens_bucket[$__rate_interval])))", "p95", ref="B")],
                   "currencyEUR"),
        timeseries("Charged requests by outcome",
                   "Requests the ledger charged: completed, deadline, client_closed (the client left mid-stream) "
                   f"and failed. Every one is charged for what it consumed. {EXACT}",
                   [target("sum by (outcome) (rate(lynx_charged_requests_total[$__rate_interval]))", "{{outcome}}")],
                   "reqps", stacked=True),
        timeseries("Time to first token p50 / p95", f"lynx_time_to_first_token_seconds. {EXACT}",
                   quantiles("lynx_time_to_first_token_seconds", "", qs=(0.5, 0.95)), "s"),
        timeseries("KV-cache slots", "Slots held by running sequences, against the pool's capacity.",
                   [target("sum(lynx_kv_cache_slots_used)", "used"),
                    target("sum(lynx_kv_cache_slots)", "capacity", ref="B")], "short"),
        timeseries("Queue depth", "Requests waiting for a KV-cache slot (saturation).",
                   [target("sum(lynx_queue_depth)", "waiting")], "short"),
        timeseries("Decoder time: busy by phase, and idle",
                   "Share of the decoder's wall time spent on sequences (all of it charged to them) and idle; "
                   "the stack adds up to 100% per decoder.",
                   [target("sum by (phase) (rate(lynx_decoder_busy_seconds_total[$__rate_interval]))", "{{phase}}"),
                    target("sum(rate(lynx_decoder_idle_seconds_total[$__rate_interval]))", "idle", ref="B")],
                   "percentunit", stacked=True),
        timeseries("CPU by service", "CPU cores used by each service process.",
                   [target(f"sum by (job) (rate(process_cpu_seconds_total{{{job}}}[$__rate_interval]))", "{{job}}")],
                   "short"),
        timeseries("Memory by service", "Resident memory of each service process.",
                   [target(f"sum by (job) (process_resident_memory_bytes{{{job}}})", "{{job}}")], "bytes"),
        timeseries("Decoder step duration p95", "One engine model call, by phase.",
                   quantiles("lynx_decoder_step_duration_seconds", "", by="phase", qs=(0.95,)), "s"),
    ], filters=(label_filter("job", "Service", "lynx_request_total"),))


BUDGET_SOURCE = ("From the budget controller (the operator, or `lynx serve budgets`), which reads each tenant's "
                 "spend since its own local midnight from Prometheus: the figures its caps are enforced by.")


def tenants() -> dict:
    tenant = 'tenant=~"$tenant"'
    charged = 'tenant=~"$tenant",model_name=~"$model_name"'  # the ledger's counters have both labels
    spend_rate = f"sum by (tenant) (increase(lynx_tenant_cost_eur_total{{{charged}}}[$__interval]))"
    tokens_rate = f"sum by (model_name, kind) (increase(lynx_tokens_total{{{charged}}}[$__interval]))"
    return dashboard("lynx-tenants", "lynx / tenants (Admin Overview)",
                     "Who spends what today, who is near or at the daily cap, what is refused, and the trends.", [
        bars("Today's spend by tenant",
             f"Spent since each tenant's local midnight (its budget's timezone). {BUDGET_SOURCE}",
             [target(f"sort_desc(max by (tenant) (lynx_budget_spent_eur{{{tenant}}}))", "{{tenant}}", instant=True)],
             "currencyEUR"),
        over(bars("Today's spend by tenant and model",
                  "EUR charged today (the dashboard's day) per tenant and served model, every outcome (a tenant near "
                  f"its cap may be served by a cheaper model). {EXACT}",
                  [target(f"sort_desc(sum by (tenant, model_name) (increase(lynx_tenant_cost_eur_total{{{charged}}}"
                          "[$__range])))", "{{tenant}} {{model_name}}", instant=True)], "currencyEUR"), "now/d"),
        over(bars("Today's tokens by model",
                  "Prompt and completion tokens charged today (the dashboard's day) to the tenants selected, every "
                  f"outcome, per served model. {EXACT}",
                  [target(f"sum by (model_name, kind) (increase(lynx_tokens_total{{{charged}}}[$__range]))",
                          "{{model_name}} {{kind}}", instant=True)], "short"), "now/d"),
        table("Tenants nearest their caps",
              "Each tenant's spend today against its effective cap (the cap plus the raises in force), its state "
              "(Ok, Warning, Blocked, Paused) and the worst-case cost its requests in flight hold at the gateways. "
              f"Alerts fire at 80 % and 100 % (LynxTenantBudgetNearCap, LynxTenantBudgetExhausted). {BUDGET_SOURCE}",
              [target(f"max by (tenant) (lynx_budget_spent_eur{{{tenant}}}) / max by (tenant) "
                      f"(lynx_budget_cap_eur{{{tenant}}})", instant=True, table=True),
               target(f"max by (tenant, state) (lynx_budget_state{{{tenant}}} == 1)", ref="B", instant=True,
                      table=True),
               target(f"max by (tenant) (lynx_budget_spent_eur{{{tenant}}})", ref="C", instant=True, table=True),
               target(f"max by (tenant) (lynx_budget_cap_eur{{{tenant}}})", ref="D", instant=True, table=True),
               target(f"max by (tenant) (lynx_budget_remaining_eur{{{tenant}}})", ref="E", instant=True, table=True),
               target(f"sum by (tenant) (lynx_budget_reserved_eur{{{tenant}}})", ref="F", instant=True, table=True)],
              {"tenant": ("Tenant", ""), "state": ("State", ""), "Value #A": ("Share of cap", "percentunit"),
               "Value #C": ("Spent today", "currencyEUR"), "Value #D": ("Cap", "currencyEUR"),
               "Value #E": ("Remaining", "currencyEUR"), "Value #F": ("Reserved in flight", "currencyEUR")},
              sort_by="Share of cap"),
        stat("Tenants by state", f"How many tenants are Ok, in Warning, Blocked or Paused. {BUDGET_SOURCE}",
             [target(f"count by (state) (max by (tenant, state) (lynx_budget_state{{{tenant}}}) == 1)", "{{state}}")],
             "short"),
        timeseries("Refused requests by tenant and reason",
                   "Requests the gateway refused with 429 insufficient_quota: blocked (cap reached), paused (by an "
                   "admin), insufficient (the request's worst-case cost did not fit what was left), unknown_tenant "
                   f"(no budget, where those are refused). {EXACT}",
                   [target(f"sum by (tenant, reason) (rate(lynx_budget_refused_requests_total{{{tenant}}}"
                           "[$__rate_interval]))", "{{tenant}} {{reason}}")], "reqps", stacked=True),
        timeseries("Failed requests, with links to their traces",
                   "Completion requests answered 4xx or 5xx (429: refused by a budget), by status. Each point "
                   "marked on the lines is an exemplar, one failed request's trace id: hover it to open the trace "
                   f"in Jaeger (the Prometheus datasource's exemplar link). {EXACT} {TRACE_SAMPLING}",
                   [target(f'sum by (status) (rate(lynx_request_total{{{COMPLETION_ENDPOINTS},status=~"[45].."}}'
                           "[$__rate_interval]))", "{{status}}", exemplar=True)], "reqps"),
        over(timeseries("Spend per hour by tenant, 7 days", f"EUR charged to each tenant per hour, every outcome. {EXACT}",
                        [target(spend_rate, "{{tenant}}")], "currencyEUR", stacked=True), "7d", "1h"),
        over(timeseries("Spend per day by tenant, 30 days", f"EUR charged to each tenant per day, every outcome. {EXACT}",
                        [target(spend_rate, "{{tenant}}")], "currencyEUR", stacked=True), "30d", "1d"),
        over(timeseries("Tokens per hour by model, 7 days",
                        f"Prompt and completion tokens charged to the tenants selected, per hour. {EXACT}",
                        [target(tokens_rate, "{{model_name}} {{kind}}")], "short", stacked=True), "7d", "1h"),
        over(timeseries("Tokens per day by model, 30 days",
                        f"Prompt and completion tokens charged to the tenants selected, per day. {EXACT}",
                        [target(tokens_rate, "{{model_name}} {{kind}}")], "short", stacked=True), "30d", "1d"),
        trace_sampling(),
    ], filters=(label_filter("tenant", "Tenant", "lynx_tenant_cost_eur_total"),
                label_filter("model_name", "Model", "lynx_tenant_cost_eur_total")))


def all_dashboards() -> dict[str, dict]:
    return {"capstone": capstone(), "serving": serving(), "tenants": tenants()}


def render(board: dict) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def write(out_dir: Path = DASHBOARDS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in all_dashboards().items():
        path = out_dir / f"{name}.json"
        path.write_text(render(board))
        written.append(path)
    return written
