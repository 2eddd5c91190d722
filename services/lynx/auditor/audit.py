"""Orphan spans: a span whose parent is missing from its own trace. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lynx.auditor.tempo import StoredSpan


@dataclass(frozen=True)
class AuditResult:
    traces: int
    spans: int
    orphans: int
    orphan_examples: tuple[tuple[str, str, str], ...] = ()  # (trace id, service, span name)

    def __add__(self, other: AuditResult) -> AuditResult:
        return AuditResult(self.traces + other.traces, self.spans + other.spans, self.orphans + other.orphans,
                           (self.orphan_examples + other.orphan_examples)[:10])


EMPTY = AuditResult(0, 0, 0)


def orphans_in_trace(spans: Iterable[StoredSpan]) -> list[StoredSpan]:
    """Spans naming a parent that is not in the trace. A span link is not a parent: it never counts."""
    spans = list(spans)
    present = {s.span_id for s in spans}
    return [s for s in spans if s.parent_span_id and s.parent_span_id not in present]


def audit_trace(spans: list[StoredSpan]) -> AuditResult:
    orphans = orphans_in_trace(spans)
    return AuditResult(traces=1 if spans else 0, spans=len(spans), orphans=len(orphans),
                       orphan_examples=tuple((s.trace_id, s.service, s.name) for s in orphans[:3]))


class AuditWindow:
    """Traces audited in the last ``lookback`` seconds; each trace is audited once."""

    def __init__(self, lookback_seconds: float) -> None:
        self.lookback = lookback_seconds
        self._audited: dict[str, tuple[float, AuditResult]] = {}

    def pending(self, trace_ids: Iterable[str]) -> list[str]:
        return [t for t in trace_ids if t not in self._audited]

    def add(self, trace_id: str, result: AuditResult, now: float) -> None:
        self._audited[trace_id] = (now, result)

    def expire(self, now: float) -> None:
        self._audited = {t: v for t, v in self._audited.items() if now - v[0] <= self.lookback}

    def totals(self) -> AuditResult:
        return sum((result for _, result in self._audited.values()), EMPTY)
