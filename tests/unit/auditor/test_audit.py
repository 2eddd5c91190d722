import base64

from lynx.auditor.audit import AuditResult, AuditWindow, audit_trace, orphans_in_trace
from lynx.auditor.tempo import StoredSpan, hex_id, spans_from_otlp_json


def span(span_id: str, parent: str = "", links: tuple[str, ...] = ()) -> StoredSpan:
    return StoredSpan("t" * 32, span_id, parent, f"span-{span_id}", "svc", links)


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


def test_the_window_audits_each_trace_once_and_forgets_old_ones():
    window = AuditWindow(lookback_seconds=60)
    window.add("t1", AuditResult(1, 5, 1), now=100)
    assert window.pending(["t1", "t2"]) == ["t2"]
    window.add("t2", AuditResult(1, 3, 0), now=130)
    assert window.totals() == AuditResult(2, 8, 1)
    window.expire(now=170)
    assert window.totals() == AuditResult(1, 3, 0)


def test_ids_are_read_in_hex_or_base64():
    raw = bytes(range(16))
    assert hex_id(base64.b64encode(raw).decode()) == raw.hex()
    assert hex_id(raw.hex().upper()) == raw.hex()
    assert hex_id("") == ""


def test_otlp_json_in_either_layout():
    trace_id, root, child = bytes(16), bytes([1] * 8), bytes([2] * 8)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    document = {"batches": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "lynx-gateway"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": b64(trace_id), "spanId": b64(root), "name": "root"},
            {"traceId": b64(trace_id), "spanId": b64(child), "parentSpanId": b64(root), "name": "child",
             "links": [{"traceId": b64(trace_id), "spanId": b64(bytes([9] * 8))}]},
        ]}]}]}
    spans = spans_from_otlp_json(document)
    assert [(s.name, s.service, s.parent_span_id) for s in spans] == [
        ("root", "lynx-gateway", ""), ("child", "lynx-gateway", root.hex())]
    assert spans[1].linked_span_ids == (bytes([9] * 8).hex(),)
    renamed = {"trace": {"resourceSpans": document["batches"]}}
    assert spans_from_otlp_json(renamed) == spans
