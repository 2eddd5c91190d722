"""Orphan spans: a span whose parent is missing from its own trace once that trace can no longer complete.
Pure functions and a window of verdicts; the runner feeds it what the trace store returns.

A trace's spans reach the store over a while: each service exports its spans in batches when they end, and the
request span, the root, ends last (a stream's after its last token). A trace read early can therefore name parents
that are still on their way. It can no longer complete once the longest request deadline and the export delay have
passed since it started: only then does a missing parent make an orphan. Until then the trace is read again at
every audit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lynx.telemetry.tracestore import StoredSpan

NANOS_PER_SECOND = 1e9


@dataclass(frozen=True)
class AuditResult:
    traces: int
    spans: int
    orphans: int
    orphan_examples: tuple[tuple[str, str, str], ...] = ()  # (trace id, service, span name)
    incomplete: int = 0  # traces still missing a parent that may yet arrive (no verdict yet)

    def __add__(self, other: AuditResult) -> AuditResult:
        return AuditResult(self.traces + other.traces, self.spans + other.spans, self.orphans + other.orphans,
                           (self.orphan_examples + other.orphan_examples)[:10], self.incomplete + other.incomplete)


EMPTY = AuditResult(0, 0, 0)


def orphans_in_trace(spans: Iterable[StoredSpan]) -> list[StoredSpan]:
    """Spans naming a parent that is not in the trace. A span link is not a parent: it never counts."""
    spans = list(spans)
    present = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id and s.parent_span_id not in present]


def audit_trace(spans: list[StoredSpan]) -> AuditResult:
    """The verdict on a trace that can no longer complete: each span missing its parent is an orphan."""
    orphans = orphans_in_trace(spans)
    return AuditResult(traces=1 if spans else 0, spans=len(spans), orphans=len(orphans),
                       orphan_examples=tuple((s.trace_id, s.service, s.name) for s in orphans[:3]))


def trace_start(spans: Iterable[StoredSpan], first_seen: float) -> float:
    """When the trace began (unix seconds): its earliest span's start, or when the auditor first saw it if no span
    says (a clock cannot make a trace look older than the auditor knows it is)."""
    starts = [s.start_unix_nano / NANOS_PER_SECOND for s in spans if s.start_unix_nano]
    return min([*starts, first_seen])


@dataclass(frozen=True)
class TraceCheck:
    """A trace as last read. ``final`` once it can no longer complete: then ``result`` is its verdict for good."""

    started: float
    first_seen: float
    final: bool
    result: AuditResult


def check_trace(spans: list[StoredSpan], first_seen: float, now: float, complete_after: float) -> TraceCheck:
    """``complete_after``: the longest request deadline plus the export delay, in seconds. A trace without a verdict
    counts nowhere but, when it misses a parent, among the incomplete."""
    started = trace_start(spans, first_seen)
    if now - started >= complete_after:
        return TraceCheck(started, first_seen, True, audit_trace(spans))
    return TraceCheck(started, first_seen, False, AuditResult(0, 0, 0, incomplete=1 if orphans_in_trace(spans) else 0))


class AuditWindow:
    """The traces of the last ``lookback`` seconds: each read again at every run until it can no longer complete,
    then its verdict kept until the trace leaves the window."""

    def __init__(self, lookback_seconds: float, complete_after_seconds: float) -> None:
        self.lookback = lookback_seconds
        self.complete_after = complete_after_seconds
        self._checks: dict[str, TraceCheck] = {}

    def due(self, trace_ids: Iterable[str]) -> list[str]:
        """What to read now: the listed traces without a verdict, and those known to be waiting even when the
        store's listing left them out (it lists the newest first, up to a limit)."""
        waiting = (t for t, check in self._checks.items() if not check.final)
        return [t for t in dict.fromkeys([*trace_ids, *waiting]) if not self.is_final(t)]

    def is_final(self, trace_id: str) -> bool:
        check = self._checks.get(trace_id)
        return check is not None and check.final

    def record(self, trace_id: str, spans: list[StoredSpan], now: float) -> TraceCheck | None:
        """The trace as just read; None when the store returned nothing (it is asked again next time)."""
        if not spans:
            return None
        previous = self._checks.get(trace_id)
        check = check_trace(spans, previous.first_seen if previous else now, now, self.complete_after)
        self._checks[trace_id] = check
        return check

    def expire(self, now: float) -> None:
        """Forgets traces older than the lookback (longer than ``complete_after``: a trace the store still has got
        its verdict before)."""
        self._checks = {t: c for t, c in self._checks.items() if now - c.started <= self.lookback}

    def totals(self) -> AuditResult:
        return sum((check.result for check in self._checks.values()), EMPTY)
