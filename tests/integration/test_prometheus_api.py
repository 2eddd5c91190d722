"""The Prometheus client against a real Prometheus scraping a real exporter: every call it offers, label values that
need escaping, and each way of failing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from lynx.local.processes import ServiceProcess, free_port, wait_ready
from lynx.local.stack import start_prometheus
from lynx.local.stopping import stop_processes
from lynx.tools.quality.cpqu import tenant_spend
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value

from .conftest import START_TIMEOUT_SECONDS, required_binary, wait_for

pytestmark = pytest.mark.integration
# A tenant id every PromQL string literal must escape: quotes, a backslash, a newline, a non-ASCII letter.
AWKWARD_TENANT = 'ac"me\\n\nö'
SPENT_EUR = 0.125
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Scraped:
    prometheus: ServiceProcess
    exporter: str  # host:port

    def client(self, **kwargs) -> PrometheusClient:
        return PrometheusClient(self.prometheus.url, **kwargs)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> Iterator[Scraped]:
    """A Prometheus scraping, every second, an exporter of a cost counter (with an exemplar) and a gauge."""
    registry = CollectorRegistry()
    cost = Counter("lynx_tenant_cost_eur", "A tenant's cost.", ["tenant"], registry=registry)
    cost.labels(AWKWARD_TENANT).inc(SPENT_EUR, exemplar={"trace_id": TRACE_ID})
    cost.labels("plain").inc(1.0)
    Gauge("probe_temperature_celsius", "Not a counter.", registry=registry).set(21.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "probe", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
    prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                  tmp_path_factory.mktemp("prometheus-api"))
    try:
        wait_ready([prometheus], START_TIMEOUT_SECONDS)
        with PrometheusClient(prometheus.url) as client:
            wait_for(lambda: len(client.query('lynx_tenant_cost_eur_total{job="probe"}')) == 2
                     and len(client.samples("probe_temperature_celsius[60s]", time.time())[0]["values"]) >= 2
                     and client.exemplars("lynx_tenant_cost_eur_total", time.time() - 60, time.time() + 5),
                     30, "Prometheus to scrape the exporter twice (samples and an exemplar)", interval=0.5)
        yield Scraped(prometheus, f"127.0.0.1:{port}")
    finally:
        stop_processes([prometheus])
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_label_value_is_escaped_so_any_tenant_can_be_selected(scraped: Scraped):
    with scraped.client() as prometheus:
        (series,) = prometheus.query(f"lynx_tenant_cost_eur_total{{tenant={label_value(AWKWARD_TENANT)}}}")
    assert series["metric"]["tenant"] == AWKWARD_TENANT and float(series["value"][1]) == SPENT_EUR
    # The CpQU report reads a tenant's spend through it: the same figure, where a bare f-string refused the query.
    assert tenant_spend(scraped.prometheus.url, AWKWARD_TENANT) == SPENT_EUR


def test_raw_samples_are_the_scraped_values_with_their_scrape_times(scraped: Scraped):
    now = time.time()
    with scraped.client() as prometheus:
        rows = prometheus.samples('lynx_tenant_cost_eur_total{tenant="plain"}[60s]', now)
        (target,) = prometheus.active_targets()
    (row,) = rows
    assert row["values"] and {float(v) for _, v in row["values"]} == {1.0}
    times = [float(t) for t, _ in row["values"]]
    assert times == sorted(times) and now - 60 <= times[0] and times[-1] <= now
    assert target["labels"]["instance"] == scraped.exporter and target["health"] == "up"


def test_a_range_query_evaluates_at_each_step(scraped: Scraped):
    end = time.time()
    with scraped.client() as prometheus:
        (row,) = prometheus.query_range('sum(lynx_tenant_cost_eur_total{tenant="plain"})', end - 2, end, 1)
    assert 1 <= len(row["values"]) <= 3 and {float(v) for _, v in row["values"]} == {1.0}


def test_exemplars_and_status_pages(scraped: Scraped):
    with scraped.client() as prometheus:
        found = prometheus.exemplars("lynx_tenant_cost_eur_total", time.time() - 600, time.time() + 5)
        version = prometheus.status("buildinfo")["version"]
    assert TRACE_ID in {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
    assert version.count(".") == 2


@pytest.mark.parametrize(("expr", "words"), [
    ("rate(probe_temperature_celsius[1m])", "PromQL info: metric might not be a counter"),  # answered, with an info
    ("histogram_quantile(0.5, probe_temperature_celsius)", "PromQL warning: bucket label"),  # with a warning
])
def test_a_doubtful_answer_is_an_error(scraped: Scraped, expr: str, words: str):
    with scraped.client() as prometheus, pytest.raises(PrometheusError) as raised:
        prometheus.query(expr)
    assert raised.value.reason == "BadAnswer" and words in raised.value.detail


def test_a_refused_query_and_an_unexpected_result_type(scraped: Scraped):
    with scraped.client() as prometheus:
        with pytest.raises(PrometheusError, match=r"^HttpError: .*HTTP 400 to lynx_tenant_cost_eur_total\{"):
            prometheus.query("lynx_tenant_cost_eur_total{")
        with pytest.raises(PrometheusError, match="^BadAnswer: .*not a matrix"):
            prometheus.samples("lynx_tenant_cost_eur_total", time.time())


def test_nothing_listening_is_unreachable():
    with PrometheusClient(f"http://127.0.0.1:{free_port()}") as prometheus, \
            pytest.raises(PrometheusError, match=r"^Unreachable: Prometheus at .* did not answer \(ConnectError"):
        prometheus.query("up")


def test_a_silent_server_is_unreachable_within_the_clients_timeout():
    """A server that accepts the connection and never answers: the client gives up after its own timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        with PrometheusClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=0.5) as prometheus, \
                pytest.raises(PrometheusError, match=r"^Unreachable: .*\(ReadTimeout"):
            prometheus.query("up")
        assert 0.5 <= time.monotonic() - started < 10
