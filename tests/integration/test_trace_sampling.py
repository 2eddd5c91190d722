"""The "Trace sample rate" panel follows the sampler the gateway runs: a gateway started with OTEL_TRACES_SAMPLER
always_on, then one with traceidratio at 0.5, each scraped by a Prometheus of its own. The panel's configured rate is
the sampler's argument, its measured share of requests traced is what the trace store received."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from lynx.telemetry.tracestore import TraceStoreClient
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_prometheus
from lynx.local.stopping import stop_processes
from lynx.tools.dashboards.build import TRACES_KEPT, all_dashboards
from lynx.tools.dashboards.panels import COMPLETION_ENDPOINTS
from lynx.tools.dashboards.queries import expand

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, ObservedStack, metric_value, required_binary, wait_for

ROUTE = "/v1/chat/completions"
SCRAPE_SECONDS = 2


@dataclass
class SampledGateway:
    gateway: ServiceProcess
    prometheus: ServiceProcess  # scrapes this gateway only: the panel's sums are this gateway's
    ratio: float
    requests: int


@pytest.fixture(params=[("always_on", "", 1.0, 40), ("traceidratio", "0.5", 0.5, 200)], ids=["always_on", "ratio_0.5"])
def sampled(request, observed: ObservedStack, base_env, tmp_path) -> Iterator[SampledGateway]:
    sampler, argument, ratio, requests = request.param
    started: list[ServiceProcess] = []
    try:
        gateway = start_service("gateway", {
            **base_env, **observed.services.upstreams_environment(), "OTEL_EXPORTER_OTLP_ENDPOINT": observed.trace_store_otlp,
            "OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": argument}, tmp_path / "gateway.log")
        started.append(gateway)
        config = prometheus_config(load_config("prometheus.yml"), {"gateway": gateway.url.removeprefix("http://")})
        config["global"]["scrape_interval"] = f"{SCRAPE_SECONDS}s"
        prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                      tmp_path / "prometheus")
        started.append(prometheus)
        wait_ready(started, START_TIMEOUT_SECONDS)
        yield SampledGateway(gateway, prometheus, ratio, requests)
    finally:
        stop_processes(started)


def complete(client: httpx.Client, headers: dict[str, str]) -> str:
    """One cheap completion; the trace id it answered with (sampled or not, every request has one)."""
    response = client.post(ROUTE, headers=headers, json={
        "model": MODEL_NAME, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    return response.headers["x-lynx-trace-id"]


def counts(gateway: ServiceProcess) -> tuple[float, float]:
    """(traced, served) completion requests, from the gateway's own /metrics."""
    text = httpx.get(f"{gateway.url}/metrics").text
    return (metric_value(text, "lynx_traced_requests_total", {"endpoint": ROUTE}),
            metric_value(text, "lynx_request_total", {"endpoint": ROUTE}))


def panel_values(observed: ObservedStack, prometheus: ServiceProcess, window_seconds: int) -> tuple[dict, dict]:
    """The sample-rate panel's two queries, with Grafana's rate interval as wide as the test's requests."""
    (panel,) = [p for p in all_dashboards()["capstone"]["panels"] if p["title"] == TRACES_KEPT]
    measured, configured = (
        observed.query(expand(t["expr"].replace("$__rate_interval", f"{window_seconds}s")), prometheus)
        for t in panel["targets"])
    return ({tuple(s["metric"].items()): float(s["value"][1]) for s in measured},
            {s["metric"]["sampler"]: float(s["value"][1]) for s in configured})


def binomial_bounds(ratio: float, trials: int, sigmas: float = 6.0) -> tuple[float, float]:
    """Where the share of ``trials`` independent draws kept at ``ratio`` lies but with a chance under 1e-8."""
    spread = sigmas * math.sqrt(ratio * (1 - ratio) / trials)
    return ratio - spread, ratio + spread


def test_the_sample_rate_panel_shows_the_configured_rate_and_the_share_traced(sampled: SampledGateway,
                                                                          observed: ObservedStack, capsys):
    headers = observed.services.headers()
    started = time.monotonic()
    with httpx.Client(base_url=sampled.gateway.url, timeout=60) as client:
        complete(client, headers)  # creates the series: a rate needs them scraped before the requests it measures
        traced_series = f'lynx_traced_requests_total{{endpoint="{ROUTE}"}}'
        wait_for(lambda: observed.query(traced_series, sampled.prometheus), 30, f"{traced_series} scraped",
                 interval=0.5)
        traced_before, served_before = counts(sampled.gateway)
        with ThreadPoolExecutor(4) as pool:
            trace_ids = list(pool.map(lambda _: complete(client, headers), range(sampled.requests)))
    traced_after, served_after = counts(sampled.gateway)
    traced = traced_after - traced_before
    assert served_after - served_before == sampled.requests == len(set(trace_ids))

    # The counter against an independent witness: the trace store holds exactly the traces counted as traced.
    store, stored = TraceStoreClient(observed.trace_store_url), set()

    def all_traced_stored() -> bool:
        stored.update(t for t in set(trace_ids) - stored if store.trace(t))
        return len(stored) == traced

    wait_for(all_traced_stored, 60, f"{traced:.0f} of the {sampled.requests} traces in Jaeger", interval=1)
    low, high = binomial_bounds(sampled.ratio, sampled.requests)
    assert low <= traced / sampled.requests <= high, (traced, sampled.requests, sampled.ratio)

    # Prometheus has scraped the last request: the panel then reads the gateway's counts over the test's window.
    served_total = f"sum(lynx_request_total{{{COMPLETION_ENDPOINTS}}})"
    wait_for(lambda: [float(s["value"][1]) for s in observed.query(served_total, sampled.prometheus)] == [served_after],
             30, f"{served_total} = {served_after}", interval=0.5)
    window = math.ceil(time.monotonic() - started) + 2 * SCRAPE_SECONDS
    measured, configured = panel_values(observed, sampled.prometheus, window)
    assert configured == {"always_on" if sampled.ratio == 1 else "traceidratio": sampled.ratio}
    ((_, share),) = measured.items()
    with capsys.disabled():
        print(f"\nconfigured {configured}: {traced:.0f} of {sampled.requests} traced and stored in Jaeger, "
              f"panel's measured share {share:.3f} (bounds {low:.3f} to {high:.3f})")
    # rate() extrapolates both counters to the window's edges alike, but for the first request's share in each
    assert share == pytest.approx(traced / sampled.requests, abs=0.02)
    if sampled.ratio == 1:
        assert share == 1
