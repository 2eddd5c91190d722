"""Parsing the trace stores' OTLP JSON (the client's HTTP side is exercised against a real Jaeger in
tests/integration; Tempo, an opt-in nothing here can run, only by its documents' layout)."""

import base64

import pytest

from lynx.telemetry.tracestore import TraceStoreClient, hex_id, rfc3339, spans_from_otlp_json

TRACE_ID, ROOT, CHILD, LINKED = bytes(range(16)), bytes([1] * 8), bytes([2] * 8), bytes([9] * 8)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def resource_spans(encode) -> list[dict]:
    return [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "lynx-gateway"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": encode(TRACE_ID), "spanId": encode(ROOT), "name": "root",
             "startTimeUnixNano": "1765100000123456789",
             "attributes": [{"key": "lynx.cost.eur", "value": {"doubleValue": 0.000125}},
                            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "8"}}]},
            {"traceId": encode(TRACE_ID), "spanId": encode(CHILD), "parentSpanId": encode(ROOT), "name": "child",
             "links": [{"traceId": encode(TRACE_ID), "spanId": encode(LINKED)}]},
        ]}]}]


def test_ids_are_read_in_hex_or_base64():
    assert hex_id(b64(TRACE_ID)) == TRACE_ID.hex()
    assert hex_id(TRACE_ID.hex().upper()) == TRACE_ID.hex()
    assert hex_id("") == ""


def test_jaeger_api_v3_answer():
    spans = spans_from_otlp_json({"result": {"resourceSpans": resource_spans(bytes.hex)}})
    assert [(s.name, s.service, s.parent_span_id) for s in spans] == [
        ("root", "lynx-gateway", ""), ("child", "lynx-gateway", ROOT.hex())]
    assert spans[0].trace_id == TRACE_ID.hex() and spans[1].linked_span_ids == (LINKED.hex(),)
    assert spans[0].attributes == {"lynx.cost.eur": 0.000125, "gen_ai.usage.output_tokens": 8}
    assert spans[0].start_unix_nano == 1765100000123456789 and spans[1].start_unix_nano == 0


@pytest.mark.parametrize("envelope", [
    lambda rs: {"batches": rs}, lambda rs: {"trace": {"resourceSpans": rs}}, lambda rs: {"resourceSpans": rs}])
def test_tempo_layouts_read_as_jaeger_does(envelope):
    jaeger = spans_from_otlp_json({"result": {"resourceSpans": resource_spans(bytes.hex)}})
    assert spans_from_otlp_json(envelope(resource_spans(b64))) == jaeger


def test_an_empty_answer_has_no_spans():
    assert spans_from_otlp_json({"result": {}}) == [] and spans_from_otlp_json({}) == []


def test_search_times_are_rfc3339_utc():
    assert rfc3339(1765100000.25) == "2025-12-07T09:33:20.250000Z"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="jaeger or tempo"):
        TraceStoreClient("http://127.0.0.1:1", kind="zipkin")  # type: ignore[arg-type]
