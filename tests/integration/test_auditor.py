"""The trace auditor on real traces in a real Jaeger: no orphan on healthy traffic, long streams included (their
children reach the store a minute before their request span), and a planted orphan reported once its trace can no
longer complete."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from lynx.auditor.audit import orphans_in_trace
from lynx.telemetry.tracestore import TraceStoreClient
from lynx.local.stopping import stop_processes
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.stack import load_config, start_collector
from lynx.local.topology import auditor_environment

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, TEST_AUDITS, ObservedStack, Stack, metric_value, required_binary, start_stack,
    start_trace_store, wait_for,
)

SERVICES = {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"}
# The long-stream run: 32 streams at once, each given up to a minute and a half by the gateway.
STREAMS = 32
STREAM_DEADLINE_SECONDS = 90
STREAM_MAX_TOKENS = 1024
# The auditor's export delay there: the SDK's 0.2 s batch delay, the collector's 2 s batch, Jaeger's indexing.
EXPORT_DELAY_SECONDS = 10


def audit(auditor: ServiceProcess) -> dict:
    response = httpx.post(f"{auditor.url}/v1/audit", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def trace_started(store: TraceStoreClient, trace_id: str) -> float:
    spans = wait_for(lambda: store.trace(trace_id), 30, f"trace {trace_id} in Jaeger")
    return min(s.start_unix_nano for s in spans) / 1e9


def wait_judged(stack: ObservedStack, store: TraceStoreClient, trace_ids: set[str]) -> dict:
    """The auditor's totals from a run after every trace of ``trace_ids`` can no longer complete (so each has its
    verdict)."""
    verdict_due = max(trace_started(store, t) for t in trace_ids) + stack.audit_complete_after
    wait_for(lambda: time.time() > verdict_due, stack.audit_complete_after + 30, "the traces' verdicts to be due",
             interval=1)
    return audit(stack.auditor)


def plant_orphan(otlp: str, trace_id: int | None = None, service: str = "lynx-test-broken") -> str:
    """A span whose parent is never exported, and a second one in the same trace that only *links* to the missing
    span (links are not parents); the trace's id."""
    trace_id = trace_id or int.from_bytes(os.urandom(16), "big")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces")))
    tracer = provider.get_tracer("broken")
    ghost = SpanContext(trace_id, int.from_bytes(os.urandom(8), "big"), is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED))
    orphan = tracer.start_span("orphan-child", context=set_span_in_context(NonRecordingSpan(ghost)))
    orphan.end()
    linked = tracer.start_span("linked-only", context=set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id, orphan.get_span_context().span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))),
        links=[Link(ghost)])
    linked.end()
    provider.shutdown()
    return f"{trace_id:032x}"


def test_normal_traffic_has_no_orphan_spans_while_a_child_whose_parent_is_never_exported_is_counted(
        observed: ObservedStack):
    """Both wait for their traces' verdicts, so they share that wait: healthy requests and a planted orphan at once."""
    before = audit(observed.auditor)["orphan_spans"]
    checked_before = metric_value(httpx.get(f"{observed.auditor.url}/metrics").text,
                                  "lynx_trace_audit_traces_checked_total")
    trace_ids = set()
    for question in ("What is a tuple?", "How do I open a file?"):
        response = httpx.post(f"{observed.services.gateway.url}/v1/chat/completions",
                              headers=observed.services.headers(), timeout=60,
                              json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                    "messages": [{"role": "user", "content": question}]})
        trace_ids.add(response.json()["lynx"]["trace_id"])
    planted = plant_orphan(observed.trace_store_otlp)
    store = TraceStoreClient(observed.trace_store_url)
    wait_judged(observed, store, trace_ids | {planted})
    result = wait_for(lambda: (r := audit(observed.auditor))["orphan_spans"] > before and r,
                      observed.audit_complete_after + 60, "the planted orphan counted", interval=2)
    assert result["traces"] >= 3 and result["spans"] >= 2 * 10
    # The planted span is the one orphan: none of the healthy requests' spans is.
    assert result["orphan_spans"] == before + 1, result["orphan_examples"]
    assert [planted, "lynx-test-broken", "orphan-child"] in result["orphan_examples"]
    assert not [example for example in result["orphan_examples"] if example[0] in trace_ids]
    metrics = httpx.get(f"{observed.auditor.url}/metrics").text
    assert metric_value(metrics, "lynx_trace_orphan_spans") == before + 1
    assert metric_value(metrics, "lynx_trace_audit_traces_checked_total") >= checked_before + 3
    assert metric_value(metrics, "lynx_trace_audit_spans_checked_total") >= result["spans"] - 1
    spans = store.trace(next(iter(trace_ids)))
    assert {s.service for s in spans} == SERVICES


# -- 32 long streams ----------------------------------------------------------------------------------------------

@dataclass
class StreamedStack:
    services: Stack
    auditor: ServiceProcess
    trace_store_url: str
    collector_otlp: str


@pytest.fixture(scope="module")
def streamed(base_env, sink, tmp_path_factory) -> Iterator[StreamedStack]:
    """The local topology on its own Jaeger (no other test's traces): services -> collector -> Jaeger, a decoder with
    a slot per stream, a 90 s gateway deadline, and an auditor that knows it."""
    work = tmp_path_factory.mktemp("streamed")
    jaeger, ports = start_trace_store(work / "jaeger")
    started = [jaeger]
    try:
        collector, collector_ports = start_collector(required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol"),
                                                     load_config("otelcol.yaml"), work / "otelcol", ports.otlp_url)
        started.append(collector)
        wait_ready([collector], START_TIMEOUT_SECONDS)
        otlp = f"http://127.0.0.1:{collector_ports.otlp_http}"
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
        auditor = start_service("auditor", {
            **env, **auditor_environment(ports.query_url, STREAM_DEADLINE_SECONDS, EXPORT_DELAY_SECONDS, **TEST_AUDITS)},
            work / "auditor.log")
        started.append(auditor)
        services = start_stack(env, work, sink, {
            "decoder": {"LYNX_DECODER_KV_SLOTS": str(STREAMS), "LYNX_DECODER_QUEUE_CAPACITY": str(STREAMS)},
            "gateway": {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": str(STREAM_DEADLINE_SECONDS)}})
        started += services.processes()
        wait_ready([auditor], START_TIMEOUT_SECONDS)
        yield StreamedStack(services, auditor, ports.query_url, otlp)
    finally:
        stop_processes(started)


@dataclass
class StreamResult:
    trace_id: str
    status: int
    seconds: float
    events: int
    final: dict = field(default_factory=dict)  # the last event with a finish reason or an error


async def one_stream(client: httpx.AsyncClient, services: Stack, number: int) -> StreamResult:
    body = {"model": MODEL_NAME, "temperature": 1.0, "max_tokens": STREAM_MAX_TOKENS, "stream": True,
            "messages": [{"role": "user", "content": f"Write a very long story, number {number}, about a river."}]}
    started = time.monotonic()
    async with client.stream("POST", f"{services.gateway.url}/v1/chat/completions", json=body,
                             headers=services.headers()) as response:
        result = StreamResult(response.headers.get("x-lynx-trace-id", ""), response.status_code, 0.0, 0)
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line.removeprefix("data: "))
                result.events += 1
                if "error" in event or any(c.get("finish_reason") for c in event.get("choices", [])):
                    result.final = event
    result.seconds = time.monotonic() - started
    return result


async def streams_and_a_planted_orphan(streamed: StreamedStack) -> tuple[list[StreamResult], str]:
    """The streams, and 5 s into them an orphan planted through the collector; its trace id."""
    async def plant() -> str:
        await asyncio.sleep(5)
        return await asyncio.to_thread(plant_orphan, streamed.collector_otlp)

    async with httpx.AsyncClient(timeout=STREAM_DEADLINE_SECONDS + 60) as client:
        planted = asyncio.create_task(plant())
        streams = await asyncio.gather(*(one_stream(client, streamed.services, n) for n in range(STREAMS)))
        return list(streams), await planted


class AuditLog:
    """The auditor's answer every 2 s, from a thread, until stopped."""

    def __init__(self, auditor: ServiceProcess) -> None:
        self.auditor = auditor
        self.answers: list[tuple[float, dict]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers.append((time.time(), audit(self.auditor)))
            except (AssertionError, httpx.HTTPError) as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            self.stop.wait(2)

    def __enter__(self) -> AuditLog:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def test_32_long_streams_make_no_orphan_while_a_planted_one_is_reported(streamed: StreamedStack):
    store = TraceStoreClient(streamed.trace_store_url)
    with AuditLog(streamed.auditor) as log:
        streams, planted = asyncio.run(streams_and_a_planted_orphan(streamed))
        # The planted orphan's verdict: due once its trace can no longer complete.
        reported = wait_for(lambda: log.answers and log.answers[-1][1]["orphan_spans"] > 0 and log.answers[-1][1],
                            STREAM_DEADLINE_SECONDS + EXPORT_DELAY_SECONDS + 60, "the planted orphan reported",
                            interval=1)
    durations = sorted(s.seconds for s in streams)
    print(f"\n{STREAMS} streams: {durations[0]:.0f}-{durations[-1]:.0f} s (median {statistics.median(durations):.0f} "
          f"s), {sum(s.events for s in streams)} events; {len(log.answers)} audits")

    assert not log.errors, log.errors[:3]
    # Every stream was served and ended cleanly (a finish reason, or the deadline's error event).
    assert all(s.status == 200 and s.final for s in streams), [(s.status, s.final) for s in streams if not s.final]
    # The run is the one the auditor used to cry wolf on: while streams were open it saw traces whose request span
    # had not arrived yet.
    assert max(answer["incomplete_traces"] for _, answer in log.answers) > 0
    # Throughout, the only orphan ever reported is the planted one, and once reported it stays.
    counts = [answer["orphan_spans"] for _, answer in log.answers]
    first = next((n for n, count in enumerate(counts) if count), len(counts))
    assert set(counts[:first]) == {0} and set(counts[first:]) == {1}, counts
    assert reported["orphan_examples"] == [[planted, "lynx-test-broken", "orphan-child"]]
    # Independently of the auditor: every stream's trace is whole in Jaeger.
    for stream in streams:
        spans = store.trace(stream.trace_id)
        assert {s.service for s in spans} == SERVICES, stream.trace_id
        assert len([s for s in spans if not s.parent_span_id]) == 1 and not orphans_in_trace(spans), stream.trace_id
    store.close()
