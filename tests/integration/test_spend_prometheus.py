"""read_spend against a real Prometheus scraping real gateways: the day's spend equals what the responses cost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lynx.local.stopping import stop_processes
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_prometheus
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError
from lynx_budget.policy import SpendFailure, SpendReading, day_window
from lynx_budget.settings import OperatorSettings
from lynx_budget.spend import read_spend, read_today
from lynx.service.polling import poll

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, ObservedStack, required_binary

pytestmark = pytest.mark.integration
SCRAPE_WAIT_SECONDS = 60


def charge(gateway_url: str, key: str, max_tokens: int) -> float:
    """One request; the cost the gateway says it charged."""
    response = httpx.post(f"{gateway_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                          json={"model": MODEL_NAME, "temperature": 0, "max_tokens": max_tokens, "retrieval_top_k": 0,
                                "messages": [{"role": "user", "content": "Name three rivers of Europe."}]})
    assert response.status_code == 200, response.text
    return response.json()["lynx"]["cost"]["total"]


def today(prometheus_url: str, tenant: str) -> Callable[[], SpendReading]:
    """Reads the tenant's spend since the current UTC midnight."""
    def read() -> SpendReading:
        now = datetime.now(UTC)
        with PrometheusClient(prometheus_url) as prometheus:
            return read_spend(prometheus, tenant, day_window("UTC", now)[0], now)
    return read


def once_scraped(read: Callable[[], SpendReading], expected: float) -> SpendReading:
    """Polls until Prometheus has scraped at least ``expected`` EUR (or gives up), returning the last reading."""
    readings: list[SpendReading] = []

    def enough() -> bool:
        readings.append(read())
        return readings[-1].spent_eur >= expected * (1 - 1e-9)

    poll(enough, SCRAPE_WAIT_SECONDS, interval=0.5)
    return readings[-1]


def test_the_day_spend_is_what_the_responses_cost(observed: ObservedStack, base_env):
    tenant = "spend-reader"
    key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(tenant)
    read = today(observed.prometheus.url, tenant)
    assert read().spent_eur == 0.0  # no series yet: not an error

    started = datetime.now(UTC)
    costs = [charge(observed.services.gateway.url, key, max_tokens) for max_tokens in (4, 12, 8)]
    reading = once_scraped(read, sum(costs))
    # The counter is exact, and its first sample (all three requests may be in it) counts whole.
    assert reading.spent_eur == pytest.approx(sum(costs), rel=1e-9)
    assert started <= reading.as_of <= datetime.now(UTC)


@pytest.fixture
def lone_gateway(observed: ObservedStack, base_env, tmp_path) -> Iterator[Callable[[], ServiceProcess]]:
    """Starts gateways on one port, in front of the observed stack's services, never two at once."""
    port, running = free_port(), []
    env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": observed.trace_store_otlp,
           "LYNX_GATEWAY_BUDGETS_FILE": str(tmp_path / "no-budgets.json"), **observed.services.upstreams_environment()}

    def start() -> ServiceProcess:
        for gateway in running:
            gateway.stop()
        gateway = start_service("gateway", env, tmp_path / f"gateway-{len(running)}.log", port=port)
        running.append(gateway)
        wait_ready([gateway], START_TIMEOUT_SECONDS)
        return gateway

    yield start
    for gateway in running:
        gateway.stop()


def test_a_restarted_gateway_counts_both_counters(lone_gateway, base_env, tmp_path):
    """The same series (same instance, tenant, outcome) restarts from 0; both lives are today's spend."""
    tenant = "spend-restarts"
    key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(tenant)
    gateway = lone_gateway()
    config = prometheus_config(load_config("prometheus.yml"), {"gateway": gateway.url.removeprefix("http://")})
    config["global"]["scrape_interval"] = "1s"
    prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                  tmp_path / "prometheus")
    try:
        wait_ready([prometheus], START_TIMEOUT_SECONDS)
        read = today(prometheus.url, tenant)
        first = charge(gateway.url, key, 2)
        assert once_scraped(read, first).spent_eur == pytest.approx(first, rel=1e-9)

        gateway = lone_gateway()
        # More than the first life's whole value in the second's first sample: no drop for a reset to show,
        # only the series' new creation time.
        second = charge(gateway.url, key, 16) + charge(gateway.url, key, 16)
        assert second > first
        reading = once_scraped(read, first + second)
        assert reading.spent_eur == pytest.approx(first + second, rel=1e-9)
    finally:
        stop_processes([gateway, prometheus])  # Prometheus after the gateway, which waits for its last scrape


@pytest.fixture
def answering() -> Iterator[Callable[[int, bytes], str]]:
    """A local HTTP server answering the spend query with the given status and body (the creation-time query with
    no series): a broken Prometheus."""
    reply = {"status": 200, "body": b""}
    no_series = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body = (200, no_series) if "last_over_time" in self.path else (reply["status"], reply["body"])
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def set_reply(status: int, body: bytes) -> str:
        reply.update(status=status, body=body)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield set_reply
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "body", "reason", "words"), [
    (503, b"Service Unavailable", "HttpError", "HTTP 503"),
    (200, b"<html>a proxy's login page</html>", "BadAnswer", "no JSON"),
    (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(), "BadAnswer",
     "not a matrix"),
    (200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}}]}}).encode(),
     "BadAnswer", "not counter samples"),
])
def test_a_broken_prometheus_is_spend_unavailable(answering, status, body, reason, words):
    url = answering(status, body)
    now = datetime.now(UTC)
    with PrometheusClient(url) as prometheus, pytest.raises(PrometheusError) as raised:
        read_spend(prometheus, "acme", day_window("UTC", now)[0], now)
    assert raised.value.reason == reason and words in str(raised.value)
    assert str(raised.value).startswith(f"{reason}: ")


def test_nothing_listening_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"
    now = datetime.now(UTC)
    with PrometheusClient(url) as prometheus, pytest.raises(PrometheusError, match="^Unreachable: Prometheus at"):
        read_spend(prometheus, "acme", day_window("UTC", now)[0], now)


def test_a_query_prometheus_refuses_is_an_http_error(observed: ObservedStack):
    with PrometheusClient(observed.prometheus.url) as prometheus, \
            pytest.raises(PrometheusError, match="^HttpError: .*HTTP 400"):
        prometheus.samples("lynx_tenant_cost_eur_total{", datetime.now(UTC))


def test_a_silent_prometheus_fails_the_read_after_the_operators_timeout(monkeypatch):
    """LYNX_OPERATOR_PROMETHEUS_TIMEOUT_SECONDS bounds a spend read (it once stayed at a fixed 30 s whatever it said):
    a server that accepts the connection and never answers is Unreachable once it has passed."""
    monkeypatch.setenv("LYNX_OPERATOR_PROMETHEUS_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("LYNX_OPERATOR_CONFIGMAP_NAMESPACE", "lynx")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setenv("LYNX_OPERATOR_PROMETHEUS_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        settings = OperatorSettings()
        started = time.monotonic()
        with PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds) as prometheus:
            now = datetime.now(UTC)
            failure = read_today(prometheus, "acme", day_window("UTC", now)[0], now)
        waited = time.monotonic() - started
    assert isinstance(failure, SpendFailure) and failure.reason == "Unreachable" and "ReadTimeout" in failure.detail
    assert 0.5 <= waited < 10
