"""The budget alerts end to end, every piece real: a gateway charges a tenant for its requests, the budget
controller (`lynx serve budgets`) reads that spend from Prometheus and exports what it decided, Prometheus
evaluates the chart's `lynx-budgets` rules and sends the alerts to Alertmanager (0.34, the chart's), which routes them
with the chart's per-tenant receivers to a webhook this test serves."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lynx.local.stopping import stop_processes
from lynx.contracts.budgets import BudgetSpec
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_process, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx.local.topology import BudgetFiles, budget_loop_environment
from lynx_budget.local import FileStore

from ..rules.chart import alertmanager_config, helm_template, rules_file
from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, required_binary, wait_for

pytestmark = pytest.mark.integration
NAMESPACE = "lynx"  # the release namespace the chart's rules select, which the ServiceMonitors' targets carry
GROUP_WAIT_SECONDS, GROUP_INTERVAL_SECONDS = 1, 3
ALERT_TIMEOUT_SECONDS = 30
# A request the tenant's budget never has room for: refused when it reserves its worst case, after retrieval and
# tokenization, which it is charged for. Each one moves the tenant's spend a small, real step.
OVERSIZED = {"model": MODEL_NAME, "max_tokens": 1024, "messages": [{"role": "user", "content": "What is a Python list?"}]}
# The cap, in refused requests: steps of about 1/15 land between 80 % and 100 % on the way up.
CAP_IN_REQUESTS = 15


@dataclass
class Notification:
    path: str
    received: float  # monotonic seconds
    body: dict

    def alerts(self, name: str, status: str = "firing") -> list[dict]:
        return [a for a in self.body["alerts"] if a["labels"]["alertname"] == name and a["status"] == status]


@dataclass
class Webhook:
    """What Alertmanager posted, in order of arrival."""

    url: str
    received: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def notifications(self, name: str, status: str = "firing") -> list[Notification]:
        with self.lock:
            return [n for n in self.received if n.alerts(name, status)]

    def wait_for(self, name: str, status: str = "firing", timeout: float = ALERT_TIMEOUT_SECONDS) -> Notification:
        found = wait_for(lambda: self.notifications(name, status), timeout, f"a {status} {name} notification",
                         interval=0.2, explain=lambda: f"received: {self.received}")
        return found[0]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.received.append(Notification(self.path, time.monotonic(), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    hook = Webhook(f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@dataclass
class Alerting:
    gateway: ServiceProcess
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


@pytest.fixture(scope="module")
def alerting(stack: Stack, base_env, webhook: Webhook, tmp_path_factory) -> Iterator[Alerting]:
    """A gateway enforcing budgets (in front of the session stack's services), the local budget controller,
    Prometheus with the chart's rules and Alertmanager with the chart's receivers for one tenant."""
    work = tmp_path_factory.mktemp("alerting")
    prometheus_port = free_port()
    budget_files = BudgetFiles.in_folder(work)
    tenant = f"capped-{prometheus_port}"
    values = {"operator": {"enabled": True}, "alerting": {"budgets": {"spendFor": "0s"},
                           "route": {"groupWait": f"{GROUP_WAIT_SECONDS}s", "groupInterval": f"{GROUP_INTERVAL_SECONDS}s",
                                     "repeatInterval": "1h"},
                           "tenantReceivers": {tenant: {"webhook": {"url": f"{webhook.url}/tenant/{tenant}"}}}}}
    chart = helm_template(values, namespace=NAMESPACE)
    rules = work / "lynx-rules.yml"
    rules.write_text(yaml.safe_dump(rules_file(chart)))
    started: list[ServiceProcess] = []
    try:
        alertmanager = start_alertmanager(
            alertmanager_config(chart, {"name": "default", "webhook_configs": [{"url": f"{webhook.url}/default"}]}),
            work / "alertmanager")
        started.append(alertmanager)
        gateway = start_service("gateway", {
            **base_env, **stack.upstreams_environment(), "LYNX_GATEWAY_BUDGETS_FILE": str(budget_files.decisions)},
            work / "gateway.log")
        started.append(gateway)
        store = FileStore(budget_files.budgets, budget_files.state)
        controller = start_service("budgets", {
            **base_env, **budget_loop_environment(budget_files, f"http://127.0.0.1:{prometheus_port}", 1)},
            work / "budgets.log")
        started.append(controller)
        targets = {p.name: p.url.removeprefix("http://") for p in (gateway, controller)}
        prometheus = start_alerting_prometheus(targets, rules, alertmanager, prometheus_port, work / "prometheus")
        started.append(prometheus)
        wait_ready(started, START_TIMEOUT_SECONDS)
        key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(tenant)
        yield Alerting(gateway, store, tenant, key, prometheus)
    finally:
        stop_processes(started)


def spent_eur(alerting: Alerting) -> float:
    """What the budget controller last exported as the tenant's spend today (0 before its first read)."""
    found = alerting.query(f'lynx_budget_spent_eur{{tenant="{alerting.tenant}"}}')
    return float(found[0]["value"][1]) if found else 0.0


def until(condition: Callable[[], bool], what: str, timeout: float = ALERT_TIMEOUT_SECONDS) -> None:
    wait_for(condition, timeout, what, interval=0.2)


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


def test_the_80_and_100_percent_alerts_reach_the_tenants_webhook_once_per_group(alerting: Alerting, webhook: Webhook):
    # The cap is set in refused requests: the first one, refused under a cap no request fits, says what one costs.
    alerting.budgets.put(BudgetSpec(tenant=alerting.tenant, daily_cap_eur=1e-4))
    until(lambda: alerting.query(f'lynx_budget_cap_eur{{tenant="{alerting.tenant}"}}'), "budget exported")
    first = alerting.complete()
    assert first.status_code == 429, first.text
    charged = first.json()["lynx"]["cost"]["total"]
    cap = CAP_IN_REQUESTS * charged
    assert cap < 1e-4, f"one refused request costs {charged} EUR: the first cap must hold more than {CAP_IN_REQUESTS}"
    alerting.budgets.put(BudgetSpec(tenant=alerting.tenant, daily_cap_eur=cap))

    charged = charge_until(alerting, 0.85 * cap, charged)
    assert charged < cap, f"one request jumped from under 85 % to {charged / cap:.0%} of the cap"
    until(lambda: spent_eur(alerting) >= 0.8 * cap, "80 % read by the budget controller")
    warning = webhook.wait_for("LynxTenantBudgetNearCap")
    time.sleep(3 * GROUP_INTERVAL_SECONDS)  # Prometheus re-sends the firing alert every second meanwhile

    charge_until(alerting, 1.05 * cap, charged)
    critical = webhook.wait_for("LynxTenantBudgetExhausted")
    # Refused for want of budget after tokenizing: charged as failed, but a 429 is the tenant's, not a model error.
    metrics, model = httpx.get(f"{alerting.gateway.url}/metrics").text, {"model_name": MODEL_NAME}
    assert metric_value(metrics, "lynx_charged_requests_total", {**model, "outcome": "failed"}) > 0
    assert metric_value(metrics, "lynx_charged_request_errors_total", model) == 0
    for _ in range(20):  # blocked now: refused before any upstream call, and no further notification
        refused = alerting.complete()
        assert refused.status_code == 429 and "cost" not in refused.json()["lynx"], refused.text
    webhook.wait_for("LynxTenantBudgetNearCap", status="resolved")  # 100 % is no longer "near" the cap
    time.sleep(3 * GROUP_INTERVAL_SECONDS)

    for notification, severity in ((warning, "warning"), (critical, "critical")):
        assert notification.path == f"/tenant/{alerting.tenant}"
        assert notification.body["receiver"] == f"{NAMESPACE}/lynx-tenants/tenant-{alerting.tenant}"
        (alert,) = notification.body["alerts"]
        assert alert["labels"]["tenant"] == alerting.tenant and alert["labels"]["severity"] == severity
        assert alert["annotations"]["summary"].startswith(f"Tenant {alerting.tenant} ")
    for name in ("LynxTenantBudgetNearCap", "LynxTenantBudgetExhausted"):
        sent = webhook.notifications(name)
        assert len(sent) == 1, f"{name} was notified {len(sent)} times while it kept firing"
    groups = [[n.received for n in webhook.received if n.body["groupLabels"].get("alertname") == name]
              for name in ("LynxTenantBudgetNearCap", "LynxTenantBudgetExhausted")]
    for times in groups:
        assert all(b - a >= GROUP_INTERVAL_SECONDS - 0.5 for a, b in zip(times, times[1:], strict=False)), times
    assert not [n for n in webhook.received if n.path == "/default" and "tenant" in n.body["commonLabels"]]


def test_alertmanager_counts_a_notification_it_cannot_deliver_as_the_notification_alert_reads_it(tmp_path):
    """The chart's LynxAlertNotificationsFailing divides two of Alertmanager's counters per integration: the real
    Alertmanager 0.34, its webhook receiver pointing at a closed port, counts its notifications in the first and
    the failed ones in the second, with the reason label the rule sums away."""
    closed = f"http://127.0.0.1:{free_port()}/hook"
    config = {"route": {"receiver": "down", "group_wait": "0s", "group_interval": "1s"},
              "receivers": [{"name": "down", "webhook_configs": [{"url": closed}]}]}
    alertmanager = start_alertmanager(config, tmp_path / "alertmanager")
    try:
        wait_ready([alertmanager], START_TIMEOUT_SECONDS)
        httpx.post(f"{alertmanager.url}/api/v2/alerts", json=[{"labels": {"alertname": "Probe"}}]).raise_for_status()
        failed = {"integration": "webhook"}

        def scraped() -> str:
            return httpx.get(f"{alertmanager.url}/metrics").text

        # A notification fails once its retries run out: after Alertmanager's 10 s minimum notification timeout.
        wait_for(lambda: metric_value(scraped(), "alertmanager_notifications_failed_total", failed) > 0,
                 START_TIMEOUT_SECONDS, "a failed webhook notification counted")
        rule = next(r for g in rules_file(helm_template({}))["groups"] for r in g["rules"]
                    if r.get("alert") == "LynxAlertNotificationsFailing")
        text = scraped()
        sent = metric_value(text, "alertmanager_notifications_total", failed)
        failures = [(sample.labels, sample.value) for family in text_string_to_metric_families(text)
                    for sample in family.samples if sample.name == "alertmanager_notifications_failed_total"
                    and sample.labels["integration"] == "webhook" and sample.value]
        # Alertmanager tries again at every group interval (1 s) while none got through: later tries may be running.
        assert 1 <= sum(value for _, value in failures) <= sent, (sent, failures)
        assert all(labels.keys() == {"integration", "reason"} for labels, _ in failures), failures
        assert "alertmanager_notifications_failed_total{" in rule["expr"] and "by (namespace, integration)" in rule["expr"]
    finally:
        stop_processes([alertmanager])

