"""Spend leases over HTTP: the real `lynx serve budgets` process, asked as the gateways ask it.

The cap checked against is the one written in the budgets file; the ceilings summed are those the answers gave; the
ledger's gauge is read from the process' /metrics. The controller is killed with SIGKILL (no chance to save anything
on the way out) and restarted on the same files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lynx.contracts.budgets import BudgetSpec
from lynx.contracts.leases import LeaseGrant, LeaseRequest
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import start_prometheus
from lynx.local.stopping import stop_processes
from lynx.local.topology import BudgetFiles, budget_loop_environment
from lynx_budget.local import FileStore
from lynx_budget.policy import day_window

from .conftest import START_TIMEOUT_SECONDS, metric_value, required_binary, wait_for

pytestmark = pytest.mark.integration
CAP_EUR = 0.01
EPS = 1e-12


@dataclass
class Controller:
    """One `lynx serve budgets` on one folder's files, restarted on the same files as often as a test wants."""

    files: BudgetFiles
    env: dict[str, str]
    work: Path
    process: ServiceProcess | None = None
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, prometheus_url: str | None = None) -> None:
        # Nothing listens on a fresh free port: the leases must be served without Prometheus.
        url = prometheus_url or f"http://127.0.0.1:{free_port()}"
        env = {**self.env, **budget_loop_environment(self.files, url, 1)}
        self.process = start_service("budgets", env, self.work / "budgets.log")
        self.started.append(self.process)
        wait_ready([self.process], START_TIMEOUT_SECONDS)

    def kill(self) -> None:
        self.process.process.kill()
        self.process.process.wait(timeout=30)

    @property
    def token(self) -> str:
        """The shared token, as the controller made it."""
        return self.files.lease_token.read_text().strip()

    def post(self, body: dict | bytes, token: str | None = "") -> httpx.Response:
        """``token``: "" the right one, None no Authorization header."""
        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        content = body if isinstance(body, bytes) else None
        return httpx.post(f"{self.process.url}/v1/leases", headers=headers, timeout=30, content=content,
                          json=None if content is not None else body)

    def ask(self, request: LeaseRequest) -> LeaseGrant:
        response = self.post(request.model_dump(mode="json"))
        assert response.status_code == 200, response.text
        return LeaseGrant.model_validate(response.json())

    def held(self, tenant: str) -> float:
        return metric_value(httpx.get(f"{self.process.url}/metrics", timeout=10).text, "lynx_budget_lease_held_eur",
                            {"tenant": tenant})


@dataclass
class Gateway:
    """A gateway's side of the protocol: numbered requests, each naming the lease it acts on until answered."""

    name: str
    tenant: str = "capped"
    sequence: int = 0
    lease: LeaseGrant | None = None

    def request(self, want: float, charged: float = 0.0, acting_ceiling: float | None = None) -> LeaseRequest:
        self.sequence += 1
        now = datetime.now(UTC)
        acting = self.lease.ceiling_eur if self.lease else 0.0
        return LeaseRequest(
            gateway=self.name, tenant=self.tenant, day_started_at=day_window("UTC", now)[0], sequence=self.sequence,
            sent_at=now, charged_eur=charged, keep_eur=charged, want_eur=want,
            acting_lease_id=self.lease.lease_id if self.lease else None,
            acting_ceiling_eur=acting if acting_ceiling is None else acting_ceiling, smallest_request_eur=1e-6)

    def renew(self, controller: Controller, want: float, charged: float = 0.0,
              acting_ceiling: float | None = None) -> LeaseGrant:
        self.lease = controller.ask(self.request(want, charged, acting_ceiling))
        return self.lease


@pytest.fixture
def controller(sink, tmp_path) -> Iterator[Controller]:
    files = BudgetFiles.in_folder(tmp_path)
    store = FileStore(files.budgets, files.state)
    store.put(BudgetSpec(tenant="capped", daily_cap_eur=CAP_EUR))
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "LYNX_BUDGETS_LEASE_LIFETIME_SECONDS": "2",
           "LYNX_BUDGETS_LONGEST_REQUEST_SECONDS": "3", "LYNX_BUDGETS_FINAL_SCRAPE_WAIT_SECONDS": "0",
           "LYNX_BUDGETS_SHUTDOWN_GRACE_SECONDS": "1"}
    running = Controller(files, env, tmp_path)
    try:
        running.start()
        yield running
    finally:
        stop_processes(running.started)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error", "lynx"} and body["error"]["message"], body
    return body["error"]["code"]


def test_only_a_gateway_with_the_token_is_answered_and_only_for_a_budgeted_tenant(controller):
    request = Gateway("g1").request(want=0.001).model_dump(mode="json")
    for token in (None, "wrong", controller.token + "x"):
        refused = controller.post(request, token=token)
        assert refused.status_code == 401 and error_code(refused) == "invalid_lease_token"
    assert controller.post(b"{not json", token=None).status_code == 401  # the token is checked first
    malformed = controller.post(b"{not json")
    assert malformed.status_code == 400 and error_code(malformed) == "invalid_request"
    negative = controller.post({**request, "want_eur": -1})
    assert negative.status_code == 400 and error_code(negative) == "invalid_request"
    assert "want_eur" in negative.json()["error"]["message"]
    stranger = controller.post(Gateway("g1", tenant="budgetless").request(want=0.001).model_dump(mode="json"))
    assert stranger.status_code == 404 and error_code(stranger) == "no_budget"
    assert "'budgetless' has no budget" in stranger.json()["error"]["message"]
    assert controller.post(request).status_code == 200
    metrics = httpx.get(f"{controller.process.url}/metrics", timeout=10).text
    assert metric_value(metrics, "lynx_budget_lease_requests_total", {"outcome": "unauthorized"}) == 4
    assert metric_value(metrics, "lynx_budget_lease_requests_total", {"outcome": "no_budget"}) == 1
    assert metric_value(metrics, "lynx_budget_lease_requests_total", {"outcome": "granted"}) == 1
    assert metric_value(metrics, "lynx_budget_lease_requests_total", {"outcome": "invalid"}) == 2
    assert metric_value(metrics, "lynx_budget_lease_request_seconds_count") == 8  # every request timed


def test_two_gateways_never_hold_more_than_the_cap_and_what_one_gives_back_the_other_gets(controller):
    gateways = [Gateway("g1"), Gateway("g2")]
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(1, 9):
            # Each asks for most of the cap at once, charging a little more each round.
            grants = list(pool.map(lambda g, charged=round_ * 1e-4: g.renew(controller, 0.8 * CAP_EUR, charged),
                                   gateways))
            assert sum(g.ceiling_eur for g in grants) <= CAP_EUR + EPS, grants
            assert all(g.ceiling_eur >= round_ * 1e-4 for g in grants)  # never below what it charged
    assert controller.held("capped") == pytest.approx(sum(g.lease.ceiling_eur for g in gateways))
    assert controller.held("capped") <= CAP_EUR + EPS

    first, second = gateways
    charged = 8e-4
    # g1 gives back what it does not need, at once (it acts on 0 beyond its charge until answered)...
    back = first.renew(controller, want=0.0, charged=charged, acting_ceiling=charged)
    assert (back.outcome, back.ceiling_eur) == ("granted", pytest.approx(charged))
    # ...and g2 is granted everything else.
    more = second.renew(controller, want=CAP_EUR, charged=charged)
    assert more.ceiling_eur == pytest.approx(CAP_EUR - charged) and more.ceiling_eur + back.ceiling_eur <= CAP_EUR + EPS
    assert controller.held("capped") == pytest.approx(CAP_EUR)
    nothing_left = first.renew(controller, want=CAP_EUR, charged=charged)
    assert (nothing_left.outcome, nothing_left.granted_eur) == ("exhausted", 0.0)
    assert nothing_left.ceiling_eur + more.ceiling_eur <= CAP_EUR + EPS


def test_a_killed_controller_continues_its_ledger(controller):
    gateway = Gateway("g1")
    gateway.renew(controller, want=0.004)
    asked = gateway.request(want=0.002, charged=0.001)
    granted = controller.ask(asked)
    controller.kill()
    controller.start()
    assert controller.ask(asked) == granted  # the same request again: the same answer, from the file
    gateway.lease = granted
    epoch, issued = granted.lease_id.rsplit("-", 1)
    renewed = gateway.renew(controller, want=0.001, charged=0.002)
    assert renewed.outcome == "granted" and renewed.lease_id == f"{epoch}-{int(issued) + 1}"
    # The ceiling counts from the gateway's acting lease as saved before the kill: keep + want.
    assert renewed.ceiling_eur == pytest.approx(0.003)


def test_a_lost_ledger_grants_nothing_until_it_is_rebuilt_from_prometheus(controller):
    gateway = Gateway("g1")
    before = gateway.renew(controller, want=0.004)
    wait_for(controller.files.state.exists, 30, "the loop's first run (its state file)")
    controller.kill()
    controller.files.leases.unlink()
    prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"),
                                  {"global": {"scrape_interval": "1s"}, "scrape_configs": []}, controller.work / "prom")
    controller.started.append(prometheus)
    wait_ready([prometheus], START_TIMEOUT_SECONDS)
    controller.start(prometheus.url)
    waiting = gateway.renew(controller, want=0.004, charged=0.001)
    assert (waiting.outcome, waiting.ceiling_eur) == ("rebuilding", pytest.approx(0.001))
    assert "restarted without its ledger" in waiting.reason

    # One lease lifetime + the longest request (2 + 3 s) after the start, the loop reads today's spend (none in this
    # Prometheus) and grants again.
    def granted() -> LeaseGrant | None:
        grant = gateway.renew(controller, want=0.004, charged=0.001)
        return grant if grant.outcome == "granted" else None

    grant = wait_for(granted, 60, "a grant once the ledger is rebuilt", interval=0.5)
    assert grant.ceiling_eur == pytest.approx(0.005)
    # A ledger started from nothing has an epoch of its own: no lease id of the lost one comes again.
    epoch = grant.lease_id.rsplit("-", 1)[0]
    assert epoch == waiting.lease_id.rsplit("-", 1)[0] != before.lease_id.rsplit("-", 1)[0]
