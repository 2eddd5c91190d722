"""The 80 % and 100 % budget alerts by email, every piece real: the alerts' chain of tests/integration/alerting.py
(gateway, budget controller, Prometheus with the chart's rules, Alertmanager with the chart's receivers), the
tenant's receiver an email entry of alerting.tenantReceivers, delivered over SMTP (no TLS) to a server this test
runs (aiosmtpd). Each message must name the tenant, give the figures Prometheus held, the state, the reset time the
gateway announces, and the link to the tenant's console page."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from lynx.contracts.budgets import BudgetStanding, rfc3339
from lynx.local.processes import free_port
from lynx.telemetry.prometheus_api import PrometheusClient

from .alerting import (
    ALERT_TIMEOUT_SECONDS, Alerting, charge_until, running_alerting, set_cap_in_requests, spent_eur, until,
)
from .conftest import Stack, wait_for

pytestmark = pytest.mark.integration
SENDER = "lynx-alerts@example.test"


@dataclass
class Mail:
    recipients: list[str]
    message: EmailMessage

    def body(self, subtype: str) -> str:
        """The text/``subtype`` part, "" if the message has none (Alertmanager's default email is HTML only)."""
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else ""

    @property
    def text(self) -> str:
        return self.body("plain")

    @property
    def html(self) -> str:
        return self.body("html")

    def about(self, alert: str) -> bool:
        return f"Alert {alert} (" in self.text

    def fields(self) -> dict[str, str]:
        """The ``Name:  value`` lines of the text body."""
        return dict(re.findall(r"^([A-Z][a-z ]+):[ \t]+([^\r\n]+)", self.text, re.MULTILINE))


@dataclass
class Mailbox:
    """What the SMTP server accepted, in order of arrival."""

    address: str
    received: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        mail = Mail(list(envelope.rcpt_tos), message_from_bytes(envelope.original_content, policy=policy.default))
        with self.lock:
            self.received.append(mail)
        return "250 Message accepted for delivery"

    def mails(self, alert: str, resolved: bool = False) -> list[Mail]:
        with self.lock:
            return [m for m in self.received if m.about(alert) and m.message["Subject"].startswith("Resolved: ") == resolved]

    def wait_for(self, alert: str, resolved: bool = False) -> Mail:
        found = wait_for(lambda: self.mails(alert, resolved), ALERT_TIMEOUT_SECONDS,
                         f"an email of {'resolved ' if resolved else ''}{alert}", interval=0.2,
                         explain=lambda: f"received: {[m.message['Subject'] for m in self.received]}")
        return found[0]


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    port = free_port()
    box = Mailbox(f"127.0.0.1:{port}")
    server = Controller(box, hostname="127.0.0.1", port=port)
    server.start()
    yield box
    server.stop()


@pytest.fixture(scope="module")
def alerting(stack: Stack, base_env, mailbox: Mailbox, tmp_path_factory) -> Iterator[Alerting]:
    """The alerts' chain with the chart's email receiver for one tenant, pointed at this test's SMTP server."""
    def receivers(tenant: str) -> dict:
        return {"email": {"to": f"{tenant}@example.test", "from": SENDER, "smarthost": mailbox.address,
                          "requireTLS": False}}

    with running_alerting(stack, base_env, tmp_path_factory.mktemp("alert-emails"), receivers,
                          {"name": "default"}) as started:
        yield started


def held_values(alerting: Alerting, metric: str) -> list[float]:
    """Every value Prometheus holds of the tenant's ``metric`` over the last five minutes, as scraped."""
    with PrometheusClient(alerting.prometheus.url) as prometheus:
        found = prometheus.samples(f'{metric}{{tenant="{alerting.tenant}"}}[5m]', time.time())
    return [float(value) for series in found for _, value in series["values"]]


def current_state(alerting: Alerting) -> str:
    (series,) = alerting.query(f'lynx_budget_state{{tenant="{alerting.tenant}"}} == 1')
    return series["metric"]["state"]


def assert_says_the_budget(mail: Mail, alerting: Alerting, cap: float, state: str, resets: str, summary: str) -> None:
    """``mail`` is for the tenant's address, names the tenant, and gives figures Prometheus held: a spend it
    scraped from the controller (the latest when the alert was sent, which may be a read behind now), the cap it holds
    now, which the test set, the percentage Prometheus' rule computes from the two, the controller's state now, the
    reset time the gateway announces, and the tenant's console page."""
    tenant = alerting.tenant
    assert mail.recipients == [f"{tenant}@example.test"] and mail.message["To"] == f"{tenant}@example.test"
    assert mail.message["From"] == SENDER
    fields = mail.fields()
    assert fields["Tenant"] == tenant, mail.text
    spent = {f"{value:.6g}": value for value in held_values(alerting, "lynx_budget_spent_eur")}
    assert fields["Spent today"].removesuffix(" EUR") in spent, (fields, sorted(spent))
    spent_then = spent[fields["Spent today"].removesuffix(" EUR")]
    (cap_now,) = alerting.query(f'lynx_budget_cap_eur{{tenant="{tenant}"}}')
    assert fields["Daily cap"] == f"{float(cap_now['value'][1]):.6g} EUR" == f"{cap:.6g} EUR", fields
    used = f"{spent_then / cap * 100:.4g}%"  # humanizePercentage: 4 significant digits
    assert fields["Used"] == used, (fields, spent_then, cap)
    assert fields["State"] == state == current_state(alerting), fields
    assert fields["Resets at"] == resets, fields
    link = f"{alerting.controller.url}/console/tenants/{tenant}"
    assert fields["Console"] == link, fields
    assert f'<a href="{link}">' in mail.html and f"<td>{fields['Spent today']}</td>" in mail.html, mail.html
    assert mail.message["Subject"] == summary.format(tenant=tenant, used=used), mail.message["Subject"]


def test_the_80_and_100_percent_alerts_reach_the_tenants_email_with_figures_and_console_link(
        alerting: Alerting, mailbox: Mailbox):
    cap, charged, first = set_cap_in_requests(alerting)
    standing = BudgetStanding.from_headers(first.headers)
    assert standing is not None, first.headers
    resets = rfc3339(standing.resets_at)  # the gateway's own word on when the budget resets

    charged = charge_until(alerting, 0.85 * cap, charged)
    assert charged < cap, f"one request jumped from under 85 % to {charged / cap:.0%} of the cap"
    until(lambda: spent_eur(alerting) >= 0.8 * cap, "80 % read by the budget controller")
    warning = mailbox.wait_for("LynxTenantBudgetNearCap")
    assert_says_the_budget(warning, alerting, cap, "Warning", resets, "Tenant {tenant} has spent {used} of today's cap.")

    charge_until(alerting, 1.05 * cap, charged)
    critical = mailbox.wait_for("LynxTenantBudgetExhausted")
    assert_says_the_budget(critical, alerting, cap, "Blocked", resets,
                           "Tenant {tenant} reached its daily cap ({used} spent).")
    # 100 % is no longer "near" the cap: the warning's end is mailed too (sendResolved, the chart's default).
    resolved = mailbox.wait_for("LynxTenantBudgetNearCap", resolved=True)
    assert resolved.recipients == [f"{alerting.tenant}@example.test"]
