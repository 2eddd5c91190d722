"""What must hold after every scenario, each measured apart from what it checks: the clients' own records of
every answer, the traces the trace store kept, the counters Prometheus scraped.

The ``*_check`` functions are pure: records and readings in, a ``Check`` out. ``read_traces``,
``counter_increase`` and ``await_scrape`` fetch the readings.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lynx.auditor.audit import orphans_in_trace
from lynx.telemetry.tracestore import StoredSpan, TraceStoreClient
from lynx.telemetry.counters import BASELINE_MARGIN, created_times, increase
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value
from lynx.service.polling import poll

COST_FAMILY = "lynx_tenant_cost_eur"
VIOLATIONS_FAMILY = "lynx_cost_identity_violations"
COST_TOLERANCE = 0.001  # 0.1 %
# Below this the cost sums are both "nothing" (float noise of adding thousands of tiny charges).
COST_FLOOR_EUR = 1e-12
# A connection the server never accepted (it was not listening while it restarted): nothing was sent, so nothing
# is owed an answer. Any other transport failure happened to a request that was sent.
NOT_CONNECTED_ERRORS = frozenset({"ConnectError"})
FAILED_OUTCOMES = ("reset", "timeout", "malformed")


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    expected: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class TraceAudit:
    """One recorded trace as the trace store returned it: no spans means the store does not have it."""

    trace_id: str
    spans: int
    orphans: tuple[StoredSpan, ...] = ()


def classify(record) -> str:
    """ok, error (an answered 4xx/5xx), refused (never connected), or one of FAILED_OUTCOMES."""
    if record.outcome == "ok":
        return "ok"
    if record.outcome == "http_error":
        return "error"
    if record.outcome == "reset" and record.error_type in NOT_CONNECTED_ERRORS:
        return "refused"
    return record.outcome


def tally(records: Iterable) -> Counter:
    return Counter(classify(r) for r in records)


# -- pure checks ---------------------------------------------------------------------------------------------------

def answered_check(records: Sequence) -> Check:
    """Every request the gateway accepted got an answer: a 2xx, or a 4xx/5xx with an OpenAI-shaped error body
    (in the stream, an error event then [DONE]); never a reset, a hang (timeout) or a body that is neither."""
    counts = tally(records)
    failed = sum(counts[o] for o in FAILED_OUTCOMES)
    examples = [f"{r.outcome} {r.error_type or ''} (status {r.status}, trace {r.trace_id or '-'})".replace("  ", " ")
                for r in records if classify(r) in FAILED_OUTCOMES][:3]
    measured = (f"{len(records)} sent: {counts['ok']} ok, {counts['error']} clean errors, {counts['refused']} refused, "
                + ", ".join(f"{counts[o]} {o}" for o in FAILED_OUTCOMES))
    return Check("every request answered", measured, "0 reset, 0 timeout, 0 malformed", bool(records) and not failed,
                 "; ".join(examples) if records else "no request was sent")


def recovered_check(records: Sequence, disrupted_at: float, recovered_at: float) -> Check:
    """The deployment serves again after the disruption: a request sent once it had begun succeeded, and ended after
    the target was whole again."""
    later = [r for r in records if r.started_at >= disrupted_at and r.finished_at >= recovered_at]
    ok = sum(1 for r in later if r.outcome == "ok")
    return Check("served after recovery", f"{ok} of {len(later)} ok", ">= 1 ok", ok > 0)


def orphans_check(audits: Sequence[TraceAudit]) -> Check:
    orphans = [span for audit in audits for span in audit.orphans]
    examples = "; ".join(f"{s.trace_id} {s.service} '{s.name}' (parent {s.parent_span_id})" for s in orphans[:3])
    return Check("orphan spans", f"{len(orphans)} in {sum(a.spans for a in audits)} spans of {len(audits)} traces",
                 "0", not orphans, examples)


def missing_traces_check(audits: Sequence[TraceAudit]) -> Check:
    missing = [a.trace_id for a in audits if not a.spans]
    return Check("traces in the trace store", f"{len(audits) - len(missing)} of {len(audits)}", "every recorded trace",
                 not missing, ", ".join(missing[:3]))


def costs_agree(client_eur: float, counted_eur: float, tolerance: float = COST_TOLERANCE) -> bool:
    if max(abs(client_eur), abs(counted_eur)) < COST_FLOOR_EUR:
        return True
    return abs(client_eur - counted_eur) <= tolerance * max(abs(client_eur), abs(counted_eur))


def cost_check(records: Sequence, counted_eur: float) -> Check:
    """What the clients were told they were charged (lynx.cost of answers and of error bodies) against the increase
    of the tenants' cost counter in Prometheus."""
    client_eur = math.fsum(r.cost_eur or 0.0 for r in records)
    difference = (counted_eur - client_eur) / client_eur * 100 if client_eur else 0.0
    return Check("costs returned = cost counter increase",
                 f"{client_eur:.9f} EUR returned, {counted_eur:.9f} EUR counted ({difference:+.3f} %)",
                 f"within {COST_TOLERANCE:.1%}", costs_agree(client_eur, counted_eur))


def violations_check(increase: float) -> Check:
    return Check("cost identity violations", f"{increase:g}", "0", increase == 0)


def drain_check(disruptions: Sequence) -> Check:
    """Every graceful stop ended by itself within its grace period (not by the SIGKILL at its end)."""
    graceful = [d for d in disruptions if d.action == "restart"]
    cut = [d for d in graceful if not d.within_grace]
    longest = max((d.gone_after_s or 0.0 for d in graceful), default=0.0)
    return Check("graceful stops drained in time", f"{len(graceful) - len(cut)} of {len(graceful)}, longest "
                 f"{longest:.1f} s", "all within their grace", bool(graceful) and not cut,
                 ", ".join(d.describe() for d in cut))


def blocked_check(statuses: Sequence[int | None]) -> Check:
    """The blocked tenant was refused (429) every time it tried, Prometheus down or not."""
    served = [s for s in statuses if s != 429]
    return Check("blocked tenant stays blocked", f"{len(statuses) - len(served)} of {len(statuses)} refused with 429",
                 "all", bool(statuses) and not served, f"answered {sorted(set(map(str, served)))}" if served else "")


# -- readings ------------------------------------------------------------------------------------------------------

def audit_spans(trace_id: str, spans: list[StoredSpan]) -> TraceAudit:
    return TraceAudit(trace_id, len(spans), tuple(orphans_in_trace(spans)))


def read_traces(store: TraceStoreClient, trace_ids: Iterable[str], wait_s: float,
                interval: float = 2.0) -> list[TraceAudit]:
    """Every trace from the trace store, re-read until it is whole (present, no orphan) or ``wait_s`` has passed:
    spans arrive in batches, parents after their children, so a trace may look broken for a while before it is not.
    Call it once the traces are old enough for every service to have exported them."""
    pending = list(dict.fromkeys(t for t in trace_ids if t))
    audits: dict[str, TraceAudit] = {}

    def all_whole() -> bool:
        nonlocal pending
        for trace_id in pending:
            audits[trace_id] = audit_spans(trace_id, store.trace(trace_id))
        pending = [t for t in pending if not audits[t].spans or audits[t].orphans]
        return not pending

    poll(all_whole, wait_s, interval)
    return list(audits.values())


def label_matcher(label: str, values: Iterable[str]) -> str:
    """``label=~"a|b"`` with each value a literal (regex characters escaped, then quoted as a PromQL string)."""
    return f"{label}=~{label_value('|'.join(re.escape(v) for v in sorted(values)))}"


def counter_increase(prometheus_url: str, family: str, start: float, end: float, matchers: str = "") -> float:
    """The exact increase of a counter family from ``start`` to ``end`` (unix seconds), summed over its series, from
    the raw samples of ``<family>_total`` and ``<family>_created``: restarts and gaps counted as the budget controller
    counts them (lynx.telemetry.counters, docs/COSTS.md), nothing extrapolated."""
    seconds = math.ceil(end - start + BASELINE_MARGIN.total_seconds())
    selector = f'{{__name__=~"{family}_total|{family}_created"{"," + matchers if matchers else ""}}}[{seconds}s]'
    with PrometheusClient(prometheus_url) as prometheus:
        rows = prometheus.samples(selector, datetime.fromtimestamp(end, UTC))
    counters = [row for row in rows if row["metric"]["__name__"] == f"{family}_total"]
    return increase(counters, created_times(rows, f"{family}_created"), start, end)[0]


def newest_scrape(prometheus_url: str, family: str, matchers: str = "") -> float | None:
    """When the least recently scraped of the series of ``<family>_total`` still scraped was last scraped (None: no
    such series)."""
    expr = f"min(timestamp({family}_total{{{matchers}}}))"
    try:
        with PrometheusClient(prometheus_url) as prometheus:
            result = prometheus.query(expr)
    except PrometheusError:
        return None
    return float(result[0]["value"][1]) if result else None


def await_scrape(prometheus_url: str, family: str, after: float, timeout: float, matchers: str = "") -> bool:
    """Until Prometheus holds a sample taken after ``after`` (unix seconds) of every series of the family still
    scraped."""
    def scraped_after() -> bool:
        newest = newest_scrape(prometheus_url, family, matchers)
        return newest is not None and newest > after

    return poll(scraped_after, timeout, interval=1.0) is not None
