"""Every Prometheus instrument lynx exports, each created once per process, on first use.

Instruments live in the default registry (what ``/metrics`` serves). They are grouped by
the component that owns them, so a process only exports what it actually measures: the
decoder's KV-slot gauge never appears, stuck at zero, on the gateway.
Label values come only from closed sets; see ``docs/METRICS.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REQUEST_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
STAGE_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
COST_BUCKETS = (1e-8, 2.5e-8, 5e-8, 1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                1e-3, 2.5e-3, 5e-3, 1e-2)
# From a long completion on a shared batch (~1e-5) to a one-token answer behind a long prefill (~0.5).
COST_PER_1K_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                       0.5, 1.0)
# How a charged request ended: the label set of the ledger's counters.
OUTCOMES = ("completed", "client_closed", "failed", "deadline")
# The gateway's completion routes as a PromQL matcher on the route-template label: the requests a client sends.
COMPLETION_ENDPOINTS = 'endpoint=~"/v1/(chat/)?completions"'


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter
    duration: Histogram
    traced: Counter


@functools.cache
def http_metrics() -> HttpMetrics:
    """RED metrics, recorded by every service's middleware."""
    return HttpMetrics(
        requests=Counter(
            "lynx_request_total", "HTTP requests handled, by route template, method and status code.",
            ["endpoint", "method", "status"],
        ),
        duration=Histogram(
            "lynx_request_duration_seconds",
            "Wall time from request start to the last byte of the response (streams included).",
            ["endpoint", "method"], buckets=REQUEST_DURATION_BUCKETS, unit="seconds",
        ),
        traced=Counter(
            "lynx_traced_requests", "HTTP requests whose server span the trace sampler kept, by route template "
            "(probes, never traced, are left out); against lynx_request_total, the share of requests traced.",
            ["endpoint"],
        ),
    )


@functools.cache
def trace_sampler_ratio() -> Gauge:
    """The trace sampler this process runs (lynx.telemetry.tracing): what the trace-fed panels state as its rate."""
    return Gauge(
        "lynx_trace_sampler_ratio", "Share of new traces the configured sampler keeps (OTEL_TRACES_SAMPLER and "
        "OTEL_TRACES_SAMPLER_ARG; parent-based samplers follow an incoming traceparent instead), by sampler name.",
        ["sampler"],
    )


@dataclass(frozen=True)
class GenerationMetrics:
    tokens: Counter
    time_to_first_token: Histogram
    stage_duration: Histogram
    stage_budget: Gauge


@functools.cache
def generation_metrics() -> GenerationMetrics:
    """What a client sees of generation, recorded by the gateway."""
    return GenerationMetrics(
        tokens=Counter(
            "lynx_tokens", "Tokens charged: kind=prompt or completion, by tenant, the model that served them and how "
            "the request ended (outcome).", ["tenant", "kind", "model_name", "outcome"],
        ),
        time_to_first_token=Histogram(
            "lynx_time_to_first_token_seconds",
            "From the gateway receiving a request to the first completion token being ready.",
            ["model_name"], buckets=TTFT_BUCKETS, unit="seconds",
        ),
        stage_duration=Histogram(
            "lynx_stage_duration_seconds",
            "Wall time of one pipeline stage of one request, as the gateway saw it.",
            ["stage"], buckets=STAGE_DURATION_BUCKETS, unit="seconds",
        ),
        stage_budget=Gauge(
            "lynx_stage_latency_budget_seconds", "The latency budget configured for each stage.", ["stage"],
            unit="seconds",
        ),
    )


class CallbackCounter:
    """A counter whose value is read when scraped (e.g. idle time that includes a wait in progress)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.source: Callable[[], float] | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self.source is not None:
            family = CounterMetricFamily(self.name, self.documentation, unit="seconds")
            family.add_metric([], self.source())
            yield family

    def describe(self) -> list:
        return []


class DecoderInstancesCollector:
    """The gateway's decoder instances, read when scraped: an instance that leaves leaves no stale series behind."""

    def __init__(self) -> None:
        # One per group of instances (the decoder, a cheaper one): base URL -> (requests in flight, ready).
        self.sources: list[Callable[[], Mapping[str, tuple[int, bool]]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not self.sources:
            return
        instances = {url: state for source in self.sources for url, state in source().items()}
        in_flight = GaugeMetricFamily("lynx_gateway_decoder_requests_in_flight",
                                      "Requests this gateway sent to each decoder instance that have not ended.",
                                      labels=["decoder"])
        for url, (count, _) in sorted(instances.items()):
            in_flight.add_metric([url.split("://", 1)[-1]], count)
        ready = GaugeMetricFamily("lynx_gateway_decoder_instances_ready",
                                  "Decoder instances this gateway may send requests to (ready at their last probe).")
        ready.add_metric([], sum(is_ready for _, is_ready in instances.values()))
        yield in_flight
        yield ready

    def describe(self) -> list:
        return []


@functools.cache
def decoder_instances_collector() -> DecoderInstancesCollector:
    collector = DecoderInstancesCollector()
    REGISTRY.register(collector)
    return collector


@dataclass(frozen=True)
class EngineMetrics:
    slots_used: Gauge
    slots_total: Gauge
    queue_depth: Gauge
    busy_seconds: Counter
    idle_seconds: CallbackCounter
    step_duration: Histogram
    rejected: Counter
    sequences: Counter
    unread_seconds: Counter


@functools.cache
def engine_metrics() -> EngineMetrics:
    """USE metrics of the decoder's batching engine."""
    idle = CallbackCounter("lynx_decoder_idle_seconds",
                           "Seconds the engine thread waited with no sequence to run; busy + idle = its wall time.")
    REGISTRY.register(idle)
    return EngineMetrics(
        slots_used=Gauge("lynx_kv_cache_slots_used", "KV-cache slots held by running sequences."),
        slots_total=Gauge("lynx_kv_cache_slots", "KV-cache slots in the pool (capacity)."),
        queue_depth=Gauge("lynx_queue_depth", "Requests waiting for a KV-cache slot."),
        busy_seconds=Counter(
            "lynx_decoder_busy_seconds", "Seconds the engine spent on sequences, by phase; all attributed to them.",
            ["phase"], unit="seconds",
        ),
        idle_seconds=idle,
        step_duration=Histogram(
            "lynx_decoder_step_duration_seconds", "Wall time of one engine model call, by phase.",
            ["phase"], buckets=STAGE_DURATION_BUCKETS, unit="seconds",
        ),
        rejected=Counter(
            "lynx_decoder_rejected_requests", "Requests turned away at once, by reason: queue_full (slots and wait "
            "queue full) or deadline (it would wait for a slot past its deadline).", ["reason"],
        ),
        sequences=Counter("lynx_decoder_sequences", "Sequences ended, by finish reason.", ["reason"]),
        unread_seconds=Counter(
            "lynx_decoder_unread_seconds",
            "Attributed seconds of sequences whose caller left before reading their end (the decoder's own record).",
            ["phase"], unit="seconds",
        ),
    )


@dataclass(frozen=True)
class CostMetrics:
    per_request: Histogram
    stage: Counter
    tenant: Counter
    charged_requests: Counter
    charged_request_errors: Counter
    per_1k_output_tokens: Histogram
    identity_violations: Counter


@functools.cache
def cost_metrics() -> CostMetrics:
    """The ledger's outputs, recorded by the gateway's ledger only (one entry per request, every outcome)."""
    return CostMetrics(
        per_request=Histogram(
            "lynx_cost_eur_per_request", "Total cost of one request in EUR.", buckets=COST_BUCKETS,
        ),
        stage=Counter("lynx_cost_stage_eur", "Cost in EUR attributed to each pipeline stage.", ["stage"]),
        tenant=Counter("lynx_tenant_cost_eur", "Cost in EUR charged to each tenant, by the model that served it and "
                       "how the request ended.", ["tenant", "model_name", "outcome"]),
        charged_requests=Counter("lynx_charged_requests", "Requests charged by the ledger, by the model that served "
                                 "them and how they ended.", ["model_name", "outcome"]),
        charged_request_errors=Counter(
            "lynx_charged_request_errors", "Charged requests that failed on lynx's side (outcome failed, but for a "
            "4xx refusal) or ran out of their deadline, by the model that served them.", ["model_name"]),
        per_1k_output_tokens=Histogram(
            "lynx_cost_eur_per_1k_output_tokens", "Request cost in EUR per 1000 completion tokens.",
            buckets=COST_PER_1K_BUCKETS,
        ),
        identity_violations=Counter(
            "lynx_cost_identity_violations",
            "Requests whose stages disagreed with an independent measurement (reason says which check failed).",
            ["reason"],
        ),
    )


@dataclass(frozen=True)
class AuditorMetrics:
    orphan_spans: Gauge
    incomplete_traces: Gauge
    window_spans: Gauge
    window_traces: Gauge
    spans_checked: Counter
    traces_checked: Counter
    orphans_found: Counter
    failures: Counter
    last_run: Gauge


@functools.cache
def auditor_metrics() -> AuditorMetrics:
    """What the trace auditor found in the trace store."""
    return AuditorMetrics(
        orphan_spans=Gauge("lynx_trace_orphan_spans",
                           "Spans whose parent is missing from their trace once it can no longer complete, among "
                           "traces of the lookback window."),
        incomplete_traces=Gauge("lynx_trace_audit_incomplete_traces",
                                "Traces of the lookback window missing a parent span that may still arrive "
                                "(read again at every audit until the request deadline and export delay passed)."),
        window_spans=Gauge("lynx_trace_audit_window_spans", "Spans judged in the lookback window."),
        window_traces=Gauge("lynx_trace_audit_window_traces", "Traces judged in the lookback window."),
        spans_checked=Counter("lynx_trace_audit_spans_checked", "Spans checked by the auditor."),
        traces_checked=Counter("lynx_trace_audit_traces_checked", "Traces checked by the auditor."),
        orphans_found=Counter("lynx_trace_audit_orphan_spans_found", "Orphan spans found by the auditor."),
        failures=Counter("lynx_trace_audit_failures", "Audit runs that could not read the trace store."),
        last_run=Gauge("lynx_trace_audit_last_run_timestamp_seconds", "When the last audit run finished."),
    )


@dataclass(frozen=True)
class BudgetMetrics:
    spent: Gauge
    cap: Gauge
    remaining: Gauge
    resets_at: Gauge
    state: Gauge
    last_read: Gauge
    read_failures: Counter


@functools.cache
def budget_metrics() -> BudgetMetrics:
    """What the budget controller (operator or local loop) decided, per tenant: the alerts' input."""
    return BudgetMetrics(
        spent=Gauge("lynx_budget_spent_eur", "Spent today (since the tenant's local midnight), as last read.", ["tenant"]),
        cap=Gauge("lynx_budget_cap_eur", "The effective daily cap: the cap plus the raises in force.", ["tenant"]),
        remaining=Gauge("lynx_budget_remaining_eur", "What the tenant may still spend today.", ["tenant"]),
        resets_at=Gauge("lynx_budget_reset_timestamp_seconds", "When the tenant's day ends and its spend starts again "
                        "from 0: its next local midnight.", ["tenant"]),
        state=Gauge("lynx_budget_state", "1 for the tenant's current state (Ok, Warning, Blocked, Paused), else 0.",
                    ["tenant", "state"]),
        last_read=Gauge("lynx_budget_spend_last_read_timestamp_seconds",
                        "When spend was last read from Prometheus successfully."),
        read_failures=Counter("lynx_budget_spend_read_failures", "Spend reads that failed (Prometheus down or garbage)."),
    )


@dataclass(frozen=True)
class LeaseMetrics:
    requests: Counter
    duration: Histogram
    held: Gauge
    confirmed: Gauge


@functools.cache
def lease_metrics() -> LeaseMetrics:
    """The budget controller's side of the spend leases (``lynx_budget.lease_desk``): the channel and the ledger."""
    return LeaseMetrics(
        requests=Counter("lynx_budget_lease_requests", "Lease requests answered, by the grant's outcome or why none "
                         "was given (unauthorized, no_budget, persist_failed).", ["outcome"]),
        duration=Histogram("lynx_budget_lease_request_seconds", "Time to answer one lease request, the ledger's write "
                           "included.", buckets=STAGE_DURATION_BUCKETS, unit="seconds"),
        held=Gauge("lynx_budget_lease_held_eur", "What the tenant's gateways hold against today's cap: confirmed "
                   "spend plus the leases outstanding.", ["tenant"]),
        confirmed=Gauge("lynx_budget_lease_confirmed_eur", "The tenant's spend today as its gateways reported or "
                        "proved it to the lease ledger.", ["tenant"]),
    )


@dataclass(frozen=True)
class EnforcementMetrics:
    refused: Counter
    reserved: Gauge


@functools.cache
def enforcement_metrics() -> EnforcementMetrics:
    """The gateway's side of the budgets."""
    return EnforcementMetrics(
        refused=Counter("lynx_budget_refused_requests", "Requests refused with 429 by the tenant's budget, by why.",
                        ["tenant", "reason"]),
        reserved=Gauge("lynx_budget_reserved_eur", "Worst-case cost reserved by requests in flight.", ["tenant"]),
    )


# The gateway process's id in the lease protocol, as an info series: the budget controller finds a gateway's own cost
# counter by it (the series of the same scrape target, at the scrapes this series has a sample in).
GATEWAY_LEASE_INFO = "lynx_gateway_lease_info"
GATEWAY_ID_LABEL = "gateway_id"


@dataclass(frozen=True)
class GatewayLeaseMetrics:
    renewals: Counter
    renewal_seconds: Histogram
    headroom: Gauge
    identity: Info


@functools.cache
def gateway_lease_metrics() -> GatewayLeaseMetrics:
    """The gateway's spend leases (lynx.gateway.leases): its channel to the budget controller and what it holds."""
    return GatewayLeaseMetrics(
        renewals=Counter("lynx_gateway_lease_renewals", "Lease renewals sent to the budget controller, by the "
                         "grant's outcome (granted, exhausted, paused, rebuilding, other_day, stale) or unreachable.",
                         ["outcome"]),
        renewal_seconds=Histogram("lynx_gateway_lease_renewal_seconds", "Time from sending a lease renewal to its "
                                  "answer (or failure).", buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                   0.5, 1, 2.5)),
        headroom=Gauge("lynx_gateway_lease_headroom_eur", "What this gateway may still admit for the tenant today: its "
                       "lease's ceiling - charged - reserved.", ["tenant"]),
        identity=Info(GATEWAY_LEASE_INFO.removesuffix("_info"), "This gateway process's id in the spend-lease "
                      "protocol (one per process: a restarted gateway is a new id), 1."),
    )


@dataclass(frozen=True)
class WatchedFileMetrics:
    stale: Gauge
    unreadable_versions: Counter


@functools.cache
def watched_file_metrics() -> WatchedFileMetrics:
    """Files a process serves from while others replace them (``lynx.service.watched_file``), by a fixed name per file."""
    return WatchedFileMetrics(
        stale=Gauge("lynx_watched_file_stale", "1 while the file's newest version cannot be read and the last good "
                    "one is served, else 0.", ["file"]),
        unreadable_versions=Counter("lynx_watched_file_unreadable_versions",
                                    "Versions of the file that could not be read or parsed (each counted once).",
                                    ["file"]),
    )
