from lynx.auditor.audit import AuditResult, AuditWindow, audit_trace, check_trace, orphans_in_trace, trace_start
from lynx.telemetry.tracestore import StoredSpan

COMPLETE_AFTER = 90.0  # a request deadline of 60 s and an export delay of 30 s


def span(span_id: str, parent: str = "", links: tuple[str, ...] = (), started: float = 0.0) -> StoredSpan:
    return StoredSpan("t" * 32, span_id, parent, f"span-{span_id}", "svc", links,
                      start_unix_nano=int(started * 1e9))


def test_a_complete_trace_has_no_orphans():
    assert orphans_in_trace([span("a"), span("b", "a"), span("c", "b")]) == []


def test_a_span_whose_parent_never_arrived_is_an_orphan():
    orphans = orphans_in_trace([span("a"), span("b", "missing")])
    assert [o.span_id for o in orphans] == ["b"]


def test_a_link_to_a_missing_span_is_not_a_parent():
    assert orphans_in_trace([span("a"), span("b", "a", links=("elsewhere",))]) == []


def test_audit_counts_traces_spans_and_orphans():
    result = audit_trace([span("a"), span("b", "x"), span("c", "y")])
    assert (result.traces, result.spans, result.orphans) == (1, 3, 2)
    assert audit_trace([]) == AuditResult(0, 0, 0)


def test_a_trace_starts_with_its_earliest_span_or_when_it_was_first_seen():
    assert trace_start([span("a", started=1000.0), span("b", "a", started=1002.5)], first_seen=1050.0) == 1000.0
    assert trace_start([span("a")], first_seen=1050.0) == 1050.0  # no span says when it started
    assert trace_start([span("a", started=2000.0)], first_seen=1050.0) == 1050.0  # a clock ahead of the auditor's


def test_a_missing_parent_is_no_orphan_while_the_trace_may_still_complete():
    # A stream's children have arrived; its request span, the root, ends (and is exported) last.
    early = [span("retrieve", "request", started=1000.0), span("decode", "request", started=1001.0)]
    check = check_trace(early, first_seen=1020.0, now=1020.0, complete_after=COMPLETE_AFTER)
    assert not check.final and check.result == AuditResult(0, 0, 0, incomplete=1)  # no verdict yet


def test_a_parent_still_missing_once_the_trace_can_no_longer_complete_makes_orphans():
    late = [span("retrieve", "request", started=1000.0), span("decode", "request", started=1001.0)]
    check = check_trace(late, first_seen=1020.0, now=1000.0 + COMPLETE_AFTER, complete_after=COMPLETE_AFTER)
    assert check.final and check.result.orphans == 2 and check.result.incomplete == 0
    assert check.result.orphan_examples[0] == ("t" * 32, "svc", "span-retrieve")


def test_the_window_rechecks_a_trace_until_its_parent_arrives_and_never_cries_wolf():
    window = AuditWindow(lookback_seconds=300, complete_after_seconds=COMPLETE_AFTER)
    children = [span("retrieve", "request", started=1000.0), span("decode", "request", started=1001.0)]
    window.record("t1", children, now=1020.0)
    assert window.totals() == AuditResult(0, 0, 0, incomplete=1)
    assert window.due([]) == ["t1"]  # read again even when the store's listing leaves it out
    whole = [span("request", started=1000.0), *children]
    window.record("t1", whole, now=1040.0)
    assert window.totals() == AuditResult(0, 0, 0)
    assert window.due(["t1"]) == ["t1"]  # whole so far, but a late child could still name a missing parent
    final = window.record("t1", whole, now=1000.0 + COMPLETE_AFTER)
    assert final is not None and final.final and final.result == AuditResult(1, 3, 0)
    assert window.due(["t1"]) == []  # a verdict is final: never read again


def test_a_planted_orphan_is_reported_once_its_trace_can_no_longer_complete():
    window = AuditWindow(lookback_seconds=300, complete_after_seconds=COMPLETE_AFTER)
    planted = [span("orphan", "ghost", started=1000.0)]
    window.record("t1", planted, now=1010.0)
    assert window.totals().orphans == 0
    window.record("t1", planted, now=1100.0)
    assert window.totals().orphans == 1 and window.totals().incomplete == 0


def test_a_late_child_with_a_missing_parent_is_still_caught():
    window = AuditWindow(lookback_seconds=300, complete_after_seconds=COMPLETE_AFTER)
    window.record("t1", [span("request", started=1000.0)], now=1030.0)
    window.record("t1", [span("request", started=1000.0), span("late", "ghost", started=1040.0)], now=1095.0)
    assert window.totals().orphans == 1


def test_the_window_forgets_traces_older_than_the_lookback():
    window = AuditWindow(lookback_seconds=300, complete_after_seconds=COMPLETE_AFTER)
    window.record("old", [span("x", "ghost", started=1000.0)], now=1100.0)
    window.record("new", [span("y", started=1200.0)], now=1300.0)
    assert window.totals() == AuditResult(2, 2, 1, (("t" * 32, "svc", "span-x"),))
    window.expire(now=1301.0)
    assert window.totals() == AuditResult(1, 1, 0)


def test_a_trace_the_store_does_not_return_is_asked_for_again():
    window = AuditWindow(lookback_seconds=300, complete_after_seconds=COMPLETE_AFTER)
    assert window.record("t1", [], now=1000.0) is None
    assert window.due(["t1"]) == ["t1"]
