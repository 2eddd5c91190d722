"""The OpenTelemetry Collector between the services and Tempo: every trace made while Tempo is down reaches it, whole,
once Tempo is back (same data folder, same ports). The services, the collector and Tempo are real processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lynx.auditor.audit import orphans_in_trace
from lynx.auditor.tempo import StoredSpan, TempoClient
from lynx.cli import stop_grace, stop_processes
from lynx.processes import ServiceProcess, wait_ready
from lynx.stack import CONFIG_DIR, CollectorPorts, TempoPorts, load_config, start_collector, start_tempo

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, required_binary, start_stack, wait_for,
)

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30
# Tempo never exits on SIGTERM once it has served a query (lynx.cli.LATER_PHASES): it is killed after this.
TEMPO_STOP_GRACE_SECONDS = stop_grace("tempo")
SERVICES = {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"}


@dataclass
class TracedStack:
    services: Stack
    collector_ports: CollectorPorts
    tempo_binary: Path
    tempo_dir: Path
    tempo_ports: TempoPorts
    tempo: ServiceProcess

    def collector_metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.collector_ports.metrics}/metrics", timeout=5).text
        return metric_value(text, name)

    def start_tempo(self) -> None:
        """Tempo on its first start's ports and data folder, ready."""
        self.tempo, _ = start_tempo(self.tempo_binary, load_config("tempo.yaml"), self.tempo_dir, self.tempo_ports)
        wait_ready([self.tempo], START_TIMEOUT_SECONDS)


@pytest.fixture
def traced(base_env, sink, tmp_path) -> Iterator[TracedStack]:
    """Tempo, the collector in front of it, and the four services exporting to the collector."""
    tempo_binary = required_binary("tempo", "scripts/build_tools.sh tempo")
    collector_binary = required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol")
    tempo, tempo_ports = start_tempo(tempo_binary, load_config("tempo.yaml"), tmp_path / "tempo")
    stack, started = None, []  # stopped with whichever Tempo runs
    try:
        collector, collector_ports = start_collector(collector_binary, load_config("otelcol.yaml"),
                                                     tmp_path / "otelcol", f"http://127.0.0.1:{tempo_ports.otlp_http}")
        started.append(collector)
        wait_ready([tempo, collector], START_TIMEOUT_SECONDS)
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_ports.otlp_http}"}
        services = start_stack(env, tmp_path, sink)
        started += services.processes()
        stack = TracedStack(services, collector_ports, tempo_binary, tmp_path / "tempo", tempo_ports, tempo)
        yield stack
    finally:
        stop_processes([*started, stack.tempo if stack else tempo])


def complete(services: Stack, question: str) -> str:
    """One completion through the gateway; its trace id."""
    response = httpx.post(f"{services.gateway.url}/v1/chat/completions", headers=services.headers(), timeout=60,
                          json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    return response.headers["x-lynx-trace-id"]


def whole(spans: list[StoredSpan]) -> bool:
    """Every service has spans in the trace, one root, every parent named has arrived, the request span is there."""
    return ({s.service for s in spans} == SERVICES and not orphans_in_trace(spans)
            and len([s for s in spans if not s.parent_span_id]) == 1
            and any("lynx.outcome" in s.attributes for s in spans))


def incomplete(tempo: TempoClient, trace_ids: list[str]) -> list[str]:
    return [t for t in trace_ids if not whole(tempo.trace(t))]


def test_the_local_collector_config_is_valid_for_the_built_collector():
    collector = required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol")
    result = subprocess.run([str(collector), "validate", f"--config={CONFIG_DIR / 'otelcol.yaml'}"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_traces_made_while_tempo_is_down_arrive_whole_once_it_is_back(traced: TracedStack):
    tempo = TempoClient(traced.tempo.url)
    before = complete(traced.services, "What is a tuple?")
    wait_for(lambda: not incomplete(tempo, [before]), 60, "the first trace whole in Tempo", interval=1)

    traced.tempo.stop(TEMPO_STOP_GRACE_SECONDS)
    outage_started = time.monotonic()
    during = []
    while time.monotonic() - outage_started < OUTAGE_SECONDS:
        during.append(complete(traced.services, f"How do I sort a list of {len(during)} numbers?"))
    # The collector held what it could not deliver: its queue has batches in it (measured by the collector).
    wait_for(lambda: traced.collector_metric("otelcol_exporter_queue_size") > 0, 10,
             "batches in the collector's queue while Tempo is down")
    queued = traced.collector_metric("otelcol_exporter_queue_size")
    outage = time.monotonic() - outage_started

    traced.start_tempo()
    tempo = TempoClient(traced.tempo.url)
    wait_for(lambda: not incomplete(tempo, during), 120, f"the {len(during)} traces of the outage whole in Tempo",
             interval=2, explain=lambda: f"incomplete: {incomplete(tempo, during)}")

    # Everything the collector accepted, it delivered: nothing dropped, nothing left waiting (its own counters).
    def delivered() -> float:
        accepted = traced.collector_metric("otelcol_receiver_accepted_spans_total")
        sent = traced.collector_metric("otelcol_exporter_sent_spans_total")
        return accepted if sent == accepted and traced.collector_metric("otelcol_exporter_queue_size") == 0 else 0
    accepted = wait_for(delivered, 30, "every span the collector accepted sent to Tempo")
    print(f"\n{len(during)} requests in a {outage:.0f} s outage; {accepted:.0f} spans in "
          f"{len(during) + 1} traces; {queued:.0f} batches queued")
