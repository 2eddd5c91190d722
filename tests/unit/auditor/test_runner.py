"""The audit run's wiring, on a store that hands out a stream's trace as it arrives: children first, the request span
a minute later (the store is a fake; the logic under test is the runner's)."""

import pytest
from pydantic import ValidationError

from lynx.auditor.runner import Auditor
from lynx.auditor.settings import AuditorSettings
from lynx.telemetry.tracestore import StoredSpan

START = 1_000_000.0


def span(span_id: str, parent: str = "") -> StoredSpan:
    return StoredSpan("a" * 32, span_id, parent, span_id, "lynx-gateway", start_unix_nano=int(START * 1e9))


class ArrivingTrace:
    """One trace whose spans the store has by then; it lists the trace only while ``listed``."""

    def __init__(self) -> None:
        self.spans: list[StoredSpan] = []
        self.listed = True
        self.reads = 0

    def recent_trace_ids(self, start: float, end: float, limit: int) -> list[str]:
        return ["a" * 32] if self.listed and self.spans else []

    def trace(self, trace_id: str) -> list[StoredSpan]:
        self.reads += 1
        return list(self.spans)


def test_a_stream_read_before_its_request_span_arrived_is_never_counted_as_orphaned():
    settings = AuditorSettings(request_deadline_seconds=60, export_delay_seconds=30, lookback_seconds=300)
    store = ArrivingTrace()
    auditor = Auditor(settings, store)  # type: ignore[arg-type]
    store.spans = [span("decode", "request"), span("tokenize", "request")]
    totals = auditor.run_once(now=START + 20)
    assert (totals.orphans, totals.incomplete) == (0, 1)
    assert auditor.metrics.incomplete_traces._value.get() == 1
    store.listed = False  # the store's listing left it out: it is read again all the same
    store.spans.append(span("request"))
    totals = auditor.run_once(now=START + 65)
    assert (totals.orphans, totals.incomplete, totals.traces) == (0, 0, 0)  # whole so far, no verdict yet
    reads = store.reads
    totals = auditor.run_once(now=START + 95)  # can no longer complete: judged whole, and never read again
    assert (totals.traces, totals.spans, totals.orphans) == (1, 3, 0) and store.reads == reads + 1
    auditor.run_once(now=START + 110)
    assert store.reads == reads + 1
    assert auditor.metrics.orphan_spans._value.get() == 0


def test_a_parent_still_missing_when_the_trace_can_no_longer_complete_is_counted():
    settings = AuditorSettings(request_deadline_seconds=60, export_delay_seconds=30, lookback_seconds=300)
    store = ArrivingTrace()
    store.spans = [span("orphan", "ghost")]
    auditor = Auditor(settings, store)  # type: ignore[arg-type]
    assert auditor.run_once(now=START + 20).orphans == 0
    totals = auditor.run_once(now=START + 90)
    assert totals.orphans == 1 and totals.orphan_examples == (("a" * 32, "lynx-gateway", "orphan"),)
    assert auditor.metrics.orphan_spans._value.get() == 1


def test_a_lookback_shorter_than_a_trace_takes_to_complete_is_refused():
    with pytest.raises(ValidationError, match="must exceed request_deadline_seconds"):
        AuditorSettings(request_deadline_seconds=60, export_delay_seconds=30, lookback_seconds=80)
