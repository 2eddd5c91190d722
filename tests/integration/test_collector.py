"""The local topology for traces: the services export to the OpenTelemetry Collector, which forwards to Jaeger.
A completion's and a closed stream's traces read back whole from Jaeger with the costs the client and the ledger
saw; every trace made while Jaeger is down reaches it, whole, once it is back (same data folder, same ports); a
restarted Jaeger still has the traces it stored before. The services, the collector and Jaeger are real
processes."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lynx.auditor.audit import orphans_in_trace
from lynx.telemetry.tracestore import StoredSpan, TraceStoreClient
from lynx.local.stopping import stop_grace, stop_processes
from lynx.local.processes import ServiceProcess, wait_ready
from lynx.local.stack import CONFIG_DIR, load_config, start_collector, start_jaeger
from lynx.local.topology import CollectorPorts, JaegerPorts

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, required_binary, start_stack, wait_for,
)

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30
JAEGER_STOP_GRACE_SECONDS = stop_grace("jaeger")
SERVICES = {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"}


@dataclass
class TracedStack:
    services: Stack
    collector_ports: CollectorPorts
    jaeger_binary: Path
    jaeger_dir: Path
    jaeger_ports: JaegerPorts
    jaeger: ServiceProcess

    def store(self) -> TraceStoreClient:
        return TraceStoreClient(self.jaeger_ports.query_url)

    def collector_metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.collector_ports.metrics}/metrics", timeout=5).text
        return metric_value(text, name)

    def start_jaeger(self) -> None:
        """Jaeger on its first start's ports and data folder, ready."""
        self.jaeger, _ = start_jaeger(self.jaeger_binary, load_config("jaeger.yaml"), self.jaeger_dir,
                                      self.jaeger_ports)
        wait_ready([self.jaeger], START_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def traced(base_env, sink, tmp_path_factory) -> Iterator[TracedStack]:
    """Jaeger, the collector in front of it, and the four services exporting to the collector: `lynx up`'s topology
    on free ports. Tests that stop Jaeger leave it running again."""
    tmp_path = tmp_path_factory.mktemp("traced")
    jaeger_binary = required_binary("jaeger", "scripts/build_tools.sh jaeger")
    collector_binary = required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol")
    jaeger, jaeger_ports = start_jaeger(jaeger_binary, load_config("jaeger.yaml"), tmp_path / "jaeger")
    stack, started = None, []  # stopped with whichever Jaeger runs
    try:
        collector, collector_ports = start_collector(collector_binary, load_config("otelcol.yaml"),
                                                     tmp_path / "otelcol", jaeger_ports.otlp_url)
        started.append(collector)
        wait_ready([jaeger, collector], START_TIMEOUT_SECONDS)
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_ports.otlp_http}"}
        services = start_stack(env, tmp_path, sink)
        started += services.processes()
        stack = TracedStack(services, collector_ports, jaeger_binary, tmp_path / "jaeger", jaeger_ports, jaeger)
        yield stack
    finally:
        stop_processes([*started, stack.jaeger if stack else jaeger])


def ask(services: Stack, question: str) -> httpx.Response:
    response = httpx.post(f"{services.gateway.url}/v1/chat/completions", headers=services.headers(), timeout=60,
                          json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    return response


def complete(services: Stack, question: str) -> str:
    """One completion through the gateway; its trace id."""
    return ask(services, question).headers["x-lynx-trace-id"]


def request_span(spans: list[StoredSpan]) -> StoredSpan:
    """The gateway's span for the request: the one that carries its outcome and cost."""
    (span,) = [s for s in spans if "lynx.outcome" in s.attributes]
    return span


def whole_trace(store: TraceStoreClient, trace_id: str, what: str) -> list[StoredSpan]:
    return wait_for(lambda: (spans := store.trace(trace_id)) and whole(spans) and spans, 60,
                    f"{what}'s trace whole in Jaeger", interval=0.5,
                    explain=lambda: [(s.service, s.name, s.parent_span_id) for s in store.trace(trace_id)])


def whole(spans: list[StoredSpan]) -> bool:
    """Every service has spans in the trace, one root, every parent named has arrived, the request span is there."""
    return ({s.service for s in spans} == SERVICES and not orphans_in_trace(spans)
            and len([s for s in spans if not s.parent_span_id]) == 1
            and any("lynx.outcome" in s.attributes for s in spans))


def incomplete(store: TraceStoreClient, trace_ids: list[str]) -> list[str]:
    return [t for t in trace_ids if not whole(store.trace(t))]


def test_the_local_collector_config_is_valid_for_the_built_collector():
    collector = required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol")
    result = subprocess.run([str(collector), "validate", f"--config={CONFIG_DIR / 'otelcol.yaml'}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_completions_trace_reads_back_whole_with_the_cost_the_client_was_told(traced: TracedStack):
    answer = ask(traced.services, "What is a dictionary?")
    spans = whole_trace(traced.store(), answer.headers["x-lynx-trace-id"], "the completion")
    # whole(): spans of all four services, one root, no parent missing; the root is the gateway's.
    assert [s.service for s in spans if not s.parent_span_id] == ["lynx-gateway"]
    assert request_span(spans).attributes["lynx.outcome"] == "completed"
    assert request_span(spans).attributes["lynx.cost.eur"] == pytest.approx(answer.json()["lynx"]["cost"]["total"],
                                                                            rel=1e-9)


def test_a_stream_its_client_closed_reads_back_whole_with_the_cost_it_was_charged(traced: TracedStack):
    services, request_id = traced.services, f"closed-{uuid.uuid4().hex[:8]}"
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 400, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a lynx."}]}
    with httpx.stream("POST", f"{services.gateway.url}/v1/chat/completions", json=body, timeout=60,
                      headers={**services.headers(), "X-Request-ID": request_id}) as response:
        assert response.status_code == 200
        trace_id = response.headers["x-lynx-trace-id"]
        deltas = (line for line in response.iter_lines() if line.startswith("data: {"))
        for _ in range(3):
            next(deltas)
    # What the ledger charged, as the gateway logged it once the request ended (its own record, not the span).
    charged = wait_for(lambda: charge_logged(services, request_id), 30, "the closed stream's charge logged")
    assert charged["outcome"] == "client_closed" and charged["cost_eur"] > 0
    spans = whole_trace(traced.store(), trace_id, "the closed stream")
    assert request_span(spans).attributes["lynx.outcome"] == "client_closed"
    assert request_span(spans).attributes["lynx.cost.eur"] == pytest.approx(charged["cost_eur"], rel=1e-9)


def charge_logged(services: Stack, request_id: str) -> dict | None:
    for line in services.gateway.log.read_text().splitlines():
        if line.startswith("{") and request_id in line:
            entry = json.loads(line)
            if entry.get("event") in ("request_finished", "request_failed") and entry["request_id"] == request_id:
                return entry
    return None


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_restarted_jaeger_still_has_the_traces_it_stored(traced: TracedStack, stop: str):
    store = traced.store()
    trace_id = complete(traced.services, f"What does {stop} do?")
    stored = whole_trace(store, trace_id, "the completion")
    pid = traced.jaeger.process.pid
    if stop == "SIGKILL":
        traced.jaeger.process.kill()
        traced.jaeger.process.wait(timeout=10)
    else:
        traced.jaeger.stop(JAEGER_STOP_GRACE_SECONDS)
        assert traced.jaeger.process.returncode == 0  # it stopped by itself, within its grace
    traced.start_jaeger()
    assert traced.jaeger.process.pid != pid
    assert sorted(s.span_id for s in store.trace(trace_id)) == sorted(s.span_id for s in stored)


def test_traces_made_while_jaeger_is_down_arrive_whole_once_it_is_back(traced: TracedStack):
    store = traced.store()
    before = complete(traced.services, "What is a tuple?")
    wait_for(lambda: not incomplete(store, [before]), 60, "the first trace whole in Jaeger", interval=1)

    traced.jaeger.stop(JAEGER_STOP_GRACE_SECONDS)
    outage_started = time.monotonic()
    during = []
    while time.monotonic() - outage_started < OUTAGE_SECONDS:
        during.append(complete(traced.services, f"How do I sort a list of {len(during)} numbers?"))
    # The collector held what it could not deliver: its queue has batches in it (measured by the collector).
    wait_for(lambda: traced.collector_metric("otelcol_exporter_queue_size") > 0, 10,
             "batches in the collector's queue while Jaeger is down")
    queued = traced.collector_metric("otelcol_exporter_queue_size")
    outage = time.monotonic() - outage_started

    traced.start_jaeger()
    wait_for(lambda: not incomplete(store, during), 120, f"the {len(during)} traces of the outage whole in Jaeger",
             interval=2, explain=lambda: f"incomplete: {incomplete(store, during)}")
    assert not incomplete(store, [before])  # what it stored before the outage, it still has

    # Everything the collector accepted, it delivered: nothing dropped, nothing left waiting (its own counters).
    def delivered() -> float:
        accepted = traced.collector_metric("otelcol_receiver_accepted_spans_total")
        sent = traced.collector_metric("otelcol_exporter_sent_spans_total")
        return accepted if sent == accepted and traced.collector_metric("otelcol_exporter_queue_size") == 0 else 0
    accepted = wait_for(delivered, 30, "every span the collector accepted sent to Jaeger")
    print(f"\n{len(during)} requests in a {outage:.0f} s outage; {accepted:.0f} spans in "
          f"{len(during) + 1} traces; {queued:.0f} batches queued")
