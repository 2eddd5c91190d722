"""The trace auditor on real traces in a real Tempo."""

from __future__ import annotations

import os
import time

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from lynx.auditor.tempo import TempoClient

from .conftest import MODEL_NAME, ObservedStack, metric_value

SETTLE_SECONDS = 3


def audit(stack: ObservedStack) -> dict:
    response = httpx.post(f"{stack.auditor.url}/v1/audit", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def wait_audited(stack: ObservedStack, trace_ids: set[str], timeout: float = 45.0) -> dict:
    """Audit until Tempo has every trace and the auditor has counted them."""
    tempo = TempoClient(stack.tempo.url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(tempo.trace(t) for t in trace_ids):
            time.sleep(SETTLE_SECONDS + 1)
            result = audit(stack)
            seen = set(tempo.recent_trace_ids(time.time() - 900, time.time()))
            if trace_ids <= seen:
                return result
        time.sleep(1)
    raise AssertionError(f"Tempo did not return traces {trace_ids} in time")


def test_normal_traffic_has_no_orphan_spans(observed: ObservedStack):
    trace_ids = set()
    for question in ("What is a tuple?", "How do I open a file?"):
        response = httpx.post(f"{observed.services.gateway.url}/v1/chat/completions",
                              headers=observed.services.headers(), timeout=60,
                              json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                    "messages": [{"role": "user", "content": question}]})
        trace_ids.add(response.json()["lynx"]["trace_id"])
    result = wait_audited(observed, trace_ids)
    assert result["traces"] >= 2 and result["spans"] >= 2 * 10
    assert result["orphan_spans"] == 0, result["orphan_examples"]
    spans = TempoClient(observed.tempo.url).trace(next(iter(trace_ids)))
    assert {s.service for s in spans} == {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"}


def test_a_child_whose_parent_is_never_exported_is_counted(observed: ObservedStack):
    before = audit(observed)["orphan_spans"]
    provider = TracerProvider(resource=Resource.create({"service.name": "lynx-test-broken"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{observed.tempo_otlp}/v1/traces")))
    tracer = provider.get_tracer("broken")
    trace_id, missing_parent = int.from_bytes(os.urandom(16), "big"), int.from_bytes(os.urandom(8), "big")
    ghost = SpanContext(trace_id, missing_parent, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    orphan = tracer.start_span("orphan-child", context=set_span_in_context(NonRecordingSpan(ghost)))
    orphan.end()
    # A second span in the same trace that only *links* to the missing span: links are not parents.
    linked = tracer.start_span("linked-only", context=set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id, orphan.get_span_context().span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))),
        links=[Link(ghost)])
    linked.end()
    provider.shutdown()
    result = wait_audited(observed, {f"{trace_id:032x}"})
    assert result["orphan_spans"] == before + 1
    assert [f"{trace_id:032x}", "lynx-test-broken", "orphan-child"] in result["orphan_examples"]
    metrics = httpx.get(f"{observed.auditor.url}/metrics").text
    assert metric_value(metrics, "lynx_trace_orphan_spans") == before + 1
    assert metric_value(metrics, "lynx_trace_audit_spans_checked_total") >= result["spans"] - 1
