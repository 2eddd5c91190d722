"""The budget alerts end to end, every piece real: a gateway charges a tenant for its requests, the budget
controller (`lynx serve budgets`) reads that spend from Prometheus and exports what it decided, Prometheus
evaluates the chart's `lynx-budgets` rules and sends the alerts to Alertmanager (0.34, the chart's), which routes them
with the chart's per-tenant receivers to a webhook this test serves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lynx.local.processes import free_port, wait_ready
from lynx.local.stopping import stop_processes

from ..rules.chart import helm_template, rules_file
from .alerting import (
    ALERT_TIMEOUT_SECONDS, GROUP_INTERVAL_SECONDS, NAMESPACE, Alerting, charge_until, running_alerting,
    set_cap_in_requests, spent_eur, start_alertmanager, until,
)
from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, wait_for

pytestmark = pytest.mark.integration


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


@pytest.fixture(scope="module")
def alerting(stack: Stack, base_env, webhook: Webhook, tmp_path_factory) -> Iterator[Alerting]:
    """The alerts' chain with the chart's receivers for one tenant: a webhook this test serves."""
    with running_alerting(stack, base_env, tmp_path_factory.mktemp("alerting"),
                          lambda tenant: {"webhook": {"url": f"{webhook.url}/tenant/{tenant}"}},
                          {"name": "default", "webhook_configs": [{"url": f"{webhook.url}/default"}]}) as started:
        yield started


def test_the_80_and_100_percent_alerts_reach_the_tenants_webhook_once_per_group(alerting: Alerting, webhook: Webhook):
    cap, charged, _ = set_cap_in_requests(alerting)
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

