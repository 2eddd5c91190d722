"""The budget alerts' chain, every piece real, for the tests of what reaches a tenant's receivers: a gateway that
charges a tenant for its requests, the budget controller (`lynx serve budgets`) that reads that spend from
Prometheus and exports what it decided, Prometheus evaluating the chart's `lynx-budgets` rules and sending the
alerts to Alertmanager (0.34, the chart's), which routes them with the chart's per-tenant receivers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from lynx.contracts.budgets import BudgetSpec
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_process, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config
from lynx.local.stopping import stop_processes
from lynx.local.topology import BudgetFiles, budget_loop_environment
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.local import FileStore

from ..rules.chart import alertmanager_config, helm_template, rules_file
from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, Stack, required_binary, wait_for

NAMESPACE = "lynx"  # the release namespace the chart's rules select, which the ServiceMonitors' targets carry
GROUP_WAIT_SECONDS, GROUP_INTERVAL_SECONDS = 1, 3
ALERT_TIMEOUT_SECONDS = 30
# A request the tenant's budget never has room for: refused when it reserves its worst case, after retrieval and
# tokenization, which it is charged for. Each one moves the tenant's spend a small, real step.
OVERSIZED = {"model": MODEL_NAME, "max_tokens": 1024, "messages": [{"role": "user", "content": "What is a Python list?"}]}
# The cap, in refused requests: steps of about 1/15 land between 80 % and 100 % on the way up.
CAP_IN_REQUESTS = 15


@dataclass
class Alerting:
    gateway: ServiceProcess
    controller: ServiceProcess
    budgets: FileStore
    tenant: str
    key: str
    prometheus: ServiceProcess

    def complete(self) -> httpx.Response:
        return httpx.post(f"{self.gateway.url}/v1/chat/completions", json=OVERSIZED, timeout=60,
                          headers={"Authorization": f"Bearer {self.key}"})

    def query(self, expr: str) -> list[dict]:
        with PrometheusClient(self.prometheus.url) as prometheus:
            return prometheus.query(expr)


def start_alertmanager(config: dict, work_dir: Path) -> ServiceProcess:
    binary = required_binary("alertmanager", "scripts/build_tools.sh alertmanager")
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    argv = [str(binary), f"--config.file={work_dir / 'alertmanager.yml'}", f"--storage.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]
    return start_process("alertmanager", argv, dict(os.environ), work_dir / "alertmanager.log",
                         f"http://127.0.0.1:{port}", ready_path="/-/ready")


def start_alerting_prometheus(targets: dict[str, str], rules: Path, alertmanager: ServiceProcess, port: int,
                              work_dir: Path) -> ServiceProcess:
    """Scraping and evaluating every second; alerts re-sent every second, so Alertmanager, not Prometheus, is what
    keeps one notification per group interval."""
    config = prometheus_config(load_config("prometheus.yml"), targets)
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    for job in config["scrape_configs"]:
        job["static_configs"][0]["labels"] = {"namespace": NAMESPACE}
    config["rule_files"] = [str(rules)]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.url.removeprefix("http://")]}]}]}
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [str(required_binary("prometheus", "scripts/build_tools.sh prometheus")),
            f"--config.file={work_dir / 'prometheus.yml'}", f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s", "--log.level=warn"]
    return start_process("prometheus", argv, dict(os.environ), work_dir / "prometheus.log",
                         f"http://127.0.0.1:{port}", ready_path="/-/ready")


@contextmanager
def running_alerting(stack: Stack, base_env: dict[str, str], work: Path, receivers: Callable[[str], dict],
                     default_receiver: dict) -> Iterator[Alerting]:
    """A gateway enforcing budgets (in front of ``stack``'s services), the local budget controller, Prometheus with
    the chart's rules and Alertmanager with the chart's receivers for one new tenant: ``receivers(tenant)``, its
    entry of alerting.tenantReceivers. The chart's console links point at the controller, as locally. Only
    test-time values shorten the waits: the alerts fire at once (spendFor 0s) and Alertmanager groups in seconds."""
    prometheus_port, controller_port = free_port(), free_port()
    budget_files = BudgetFiles.in_folder(work)
    tenant = f"capped-{prometheus_port}"
    controller_url = f"http://127.0.0.1:{controller_port}"
    values = {"operator": {"enabled": True}, "alerting": {
        "budgets": {"spendFor": "0s"}, "consoleUrl": controller_url,
        "route": {"groupWait": f"{GROUP_WAIT_SECONDS}s", "groupInterval": f"{GROUP_INTERVAL_SECONDS}s",
                  "repeatInterval": "1h"},
        "tenantReceivers": {tenant: receivers(tenant)}}}
    chart = helm_template(values, namespace=NAMESPACE)
    rules = work / "lynx-rules.yml"
    rules.write_text(yaml.safe_dump(rules_file(chart)))
    started: list[ServiceProcess] = []
    try:
        alertmanager = start_alertmanager(alertmanager_config(chart, default_receiver), work / "alertmanager")
        started.append(alertmanager)
        gateway = start_service("gateway", {
            **base_env, **stack.upstreams_environment(), "LYNX_GATEWAY_BUDGETS_FILE": str(budget_files.decisions)},
            work / "gateway.log")
        started.append(gateway)
        store = FileStore(budget_files.budgets, budget_files.state)
        controller = start_service("budgets", {
            **base_env, **budget_loop_environment(budget_files, f"http://127.0.0.1:{prometheus_port}", 1)},
            work / "budgets.log", port=controller_port)
        started.append(controller)
        targets = {p.name: p.url.removeprefix("http://") for p in (gateway, controller)}
        prometheus = start_alerting_prometheus(targets, rules, alertmanager, prometheus_port, work / "prometheus")
        started.append(prometheus)
        wait_ready(started, START_TIMEOUT_SECONDS)
        key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(tenant)
        yield Alerting(gateway, controller, store, tenant, key, prometheus)
    finally:
        stop_processes(started)


def spent_eur(alerting: Alerting) -> float:
    """What the budget controller last exported as the tenant's spend today (0 before its first read)."""
    found = alerting.query(f'lynx_budget_spent_eur{{tenant="{alerting.tenant}"}}')
    return float(found[0]["value"][1]) if found else 0.0


def until(condition: Callable[[], bool], what: str, timeout: float = ALERT_TIMEOUT_SECONDS) -> None:
    wait_for(condition, timeout, what, interval=0.2)


def set_cap_in_requests(alerting: Alerting) -> tuple[float, float, httpx.Response]:
    """Gives the tenant a cap of CAP_IN_REQUESTS refused requests: the first one, refused under a cap no request
    fits, says what one costs. Returns the cap, what that request was charged, and its answer."""
    alerting.budgets.put(BudgetSpec(tenant=alerting.tenant, daily_cap_eur=1e-4))
    until(lambda: alerting.query(f'lynx_budget_cap_eur{{tenant="{alerting.tenant}"}}'), "budget exported")
    first = alerting.complete()
    assert first.status_code == 429, first.text
    charged = first.json()["lynx"]["cost"]["total"]
    cap = CAP_IN_REQUESTS * charged
    assert cap < 1e-4, f"one refused request costs {charged} EUR: the first cap must hold more than {CAP_IN_REQUESTS}"
    alerting.budgets.put(BudgetSpec(tenant=alerting.tenant, daily_cap_eur=cap))
    return cap, charged, first


def charge_until(alerting: Alerting, eur: float, charged: float) -> float:
    """Sends oversized requests until the gateway has charged the tenant ``eur`` or refuses it before charging
    anything (it counts nothing left); returns the total charged."""
    while charged < eur:
        response = alerting.complete()
        assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota", response.text
        cost = response.json()["lynx"].get("cost")
        if cost is None:  # refused before any upstream call: the gateway counts nothing left
            break
        charged += cost["total"]
    return charged
