"""Every panel of every dashboard has a contract: its queries return data from a real Prometheus
scraping the real services, within 60 seconds of one warm-up request (and, for the tenants dashboard,
one request its budget refuses)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from lynx.local.stopping import stop_processes
from lynx.contracts.budgets import BudgetDecisions, BudgetSpec
from lynx.tools.dashboards.build import all_dashboards
from lynx.tools.dashboards.queries import expand, panel_queries
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import find_binary, load_config, prometheus_config, start_prometheus
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx.local.topology import BudgetFiles, budget_loop_environment
from lynx_budget.local import FileStore

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, ObservedStack, required_binary, wait_for

CONTRACT_SECONDS = 60
METRIC_NAME = re.compile(r"\b((?:lynx|process)_[a-z0-9_]+)\b")


def exported_names(services: list[ServiceProcess]) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for service in services:
        for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text):
            names.update(sample.name for sample in family.samples)
    return names


def warm_up(gateway: ServiceProcess, headers: dict[str, str]) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers,
                          timeout=60, json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 8,
                                            "messages": [{"role": "user", "content": "What is a Python list?"}]})
    assert response.status_code == 200, response.text


@dataclass
class Budgeted:
    """A gateway enforcing budgets in front of the observed services, the local budget controller beside it, and a
    Prometheus that has seen nothing yet (so time to first data is measured from the warm-up) scraping them, the
    observed services and the auditor."""

    gateway: ServiceProcess
    controller: ServiceProcess
    prometheus: ServiceProcess
    served: dict[str, str]  # headers of a tenant with room to spare
    capped: dict[str, str]  # headers of a tenant no request fits

    def warm_up(self) -> httpx.Response:
        """One answered request, then one the budget refuses; returns the refusal."""
        warm_up(self.gateway, self.served)
        refused = httpx.post(f"{self.gateway.url}/v1/chat/completions", headers=self.capped, timeout=60, json={
            "model": MODEL_NAME, "max_tokens": 512, "messages": [{"role": "user", "content": "Hello"}]})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", refused.text
        return refused


@pytest.fixture(scope="module")
def budgeted(observed: ObservedStack, base_env, tmp_path_factory) -> Iterator[Budgeted]:
    work = tmp_path_factory.mktemp("budgeted")
    prometheus_port = free_port()
    budget_files = BudgetFiles.in_folder(work)
    decisions = budget_files.decisions
    registry = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
    served, capped = f"roomy-{prometheus_port}", f"capped-{prometheus_port}"
    keys = {tenant: registry.add(tenant) for tenant in (served, capped)}
    store = FileStore(budget_files.budgets, budget_files.state)
    store.put(BudgetSpec(tenant=served, daily_cap_eur=1.0))
    store.put(BudgetSpec(tenant=capped, daily_cap_eur=1e-6))
    services = observed.services
    started: list[ServiceProcess] = []
    try:
        gateway = start_service("gateway", {
            **base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": observed.trace_store_otlp, "LYNX_GATEWAY_BUDGETS_FILE": str(decisions),
            **services.upstreams_environment()}, work / "gateway.log")
        started.append(gateway)
        controller = start_service("budgets", {
            **base_env, **budget_loop_environment(budget_files, f"http://127.0.0.1:{prometheus_port}", 1)},
            work / "budgets.log")
        started.append(controller)
        scraped = [services.tokenizer, services.retriever, services.decoder, observed.auditor, gateway, controller]
        config = prometheus_config(load_config("prometheus.yml"),
                                   {p.name: p.url.removeprefix("http://") for p in scraped})
        config["global"]["scrape_interval"] = "2s"
        prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                      work / "prometheus", port=prometheus_port)
        started.append(prometheus)
        wait_ready(started, START_TIMEOUT_SECONDS)
        wait_for(lambda: decisions.exists()
                 and BudgetDecisions.model_validate_json(decisions.read_text()).tenants.keys() >= {served, capped},
                 START_TIMEOUT_SECONDS, f"budget decisions for {served} and {capped} in {decisions}", interval=0.5)
        yield Budgeted(gateway, controller, prometheus, *({"Authorization": f"Bearer {keys[t]}"} for t in (served, capped)))
    finally:
        stop_processes(started)


def test_every_panel_returns_data_within_a_minute_of_one_request(observed: ObservedStack, budgeted: Budgeted, capsys):
    budgeted.warm_up()
    started = time.monotonic()
    waiting = {(q.dashboard, q.panel, q.expr) for q in panel_queries()}
    first_data: dict[tuple[str, str, str], float] = {}
    while waiting and time.monotonic() - started < CONTRACT_SECONDS:
        for query in sorted(waiting):
            if observed.query(query[2], budgeted.prometheus):
                first_data[query] = time.monotonic() - started
                waiting.discard(query)
        time.sleep(1)
    with capsys.disabled():
        print("\npanel time-to-first-data:")
        for (board, title, _), seconds in sorted(first_data.items(), key=lambda item: item[1]):
            print(f"  {seconds:5.1f} s  {board} / {title}")
    assert not waiting, "panels with no data after 60 s:\n" + "\n".join(f"{b} / {t}: {e}" for b, t, e in waiting)


def test_no_panel_references_a_metric_that_no_service_exports(observed: ObservedStack, budgeted: Budgeted):
    budgeted.warm_up()
    services = observed.services
    exported = exported_names([services.tokenizer, services.retriever, services.decoder, observed.auditor,
                               budgeted.gateway, budgeted.controller])
    missing = {(q.panel, name) for q in panel_queries() for name in METRIC_NAME.findall(q.expr)
               if name not in exported}
    assert not missing, f"metrics no service exports: {sorted(missing)}"


def test_every_expression_parses_with_promtool(tmp_path):
    promtool = find_binary("promtool") or pytest.fail("promtool is required: scripts/build_tools.sh prometheus builds it")
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"lynx:panel_{index}", "expr": expr} for index, expr in enumerate(q.expr for q in panel_queries())]}]}
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shutil.which(str(promtool))


def exemplar_trace_ids(prometheus_url: str, expr: str) -> set[str]:
    """The trace ids of the exemplars Prometheus holds of ``expr``'s series from the last 10 minutes."""
    with PrometheusClient(prometheus_url) as prometheus:
        found = prometheus.exemplars(expr, time.time() - 600, time.time() + 5)
    return {e["labels"].get("trace_id") for series in found for e in series["exemplars"]}


def test_the_failures_panel_links_a_refused_request_to_its_trace(budgeted: Budgeted):
    """The exemplars of the tenants dashboard's failures panel carry the trace id the refused request answered with."""
    (panel,) = [p for p in all_dashboards()["tenants"]["panels"] if p["title"].startswith("Failed requests")]
    (query,) = [expand(t["expr"]) for t in panel["targets"] if t.get("exemplar")]
    trace_id = budgeted.warm_up().headers["X-Lynx-Trace-Id"]
    wait_for(lambda: trace_id in exemplar_trace_ids(budgeted.prometheus.url, query), 30,
             f"an exemplar with trace_id {trace_id} for {query}", interval=1)


def test_prometheus_stores_exemplars_with_trace_ids(observed: ObservedStack):
    response = httpx.post(f"{observed.services.gateway.url}/v1/chat/completions", headers=observed.services.headers(),
                          timeout=60, json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "Hello"}]})
    trace_id = response.json()["lynx"]["trace_id"]
    wait_for(lambda: trace_id in exemplar_trace_ids(observed.prometheus.url, "lynx_cost_eur_per_request_bucket"), 30,
             f"an exemplar with trace_id {trace_id} in Prometheus", interval=1)
