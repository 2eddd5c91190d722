"""A cap that holds across gateways: one real budget controller (`lynx serve budgets`) granting spend leases to three
real gateways in front of the same tokenizer, retriever and decoder.

Clients spread over the three drive one tenant to its cap. What is checked comes from elsewhere than the lease
books: the costs each client was told, each gateway's own tenant counter (its /metrics), the decision the controller
published, and the answers of all three gateways once the tenant is Blocked.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Lock

import httpx
import pytest

from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stopping import stop_processes
from lynx.accounting.spend import read_spend
from lynx.local.stack import start_prometheus
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx_budget.leases import LeaseLedger, confirmed_eur, holding_eur
from lynx_budget.policy import day_window
from lynx.local.topology import BudgetFiles, budget_loop_environment, lease_environment, upstreams_environment

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, metric_value, published_state, required_binary, start_stack, wait_for,
)

pytestmark = pytest.mark.integration
GATEWAYS = 3
CLIENTS = 9
CAP_EUR = 6e-4  # a few dozen short answers
SHORT = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 16, "retrieval_top_k": 0,
         "messages": [{"role": "user", "content": "Name three colours."}]}
# The cheapest request there is: a one-token prompt and one token (a chat's template alone is a dozen tokens).
TINY = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 1, "prompt": "a"}
ROUNDING_EUR = 1e-15


@dataclass
class LeaseBed:
    gateways: list[ServiceProcess]
    controller: ServiceProcess
    files: BudgetFiles
    cli_env: dict[str, str]
    keys: dict[str, str]
    controller_env: dict[str, str]
    work: Path
    started: list[ServiceProcess]
    upstreams: dict[str, str] = field(default_factory=dict)  # the gateways' way to the tokenizer, retriever, decoder
    prometheus: ServiceProcess | None = None

    def restart_controller(self) -> None:
        """SIGKILL the controller, then start it again on the same port and files: it continues from its ledger."""
        self.controller.process.kill()
        self.controller.process.wait(10)
        port = int(self.controller.url.rsplit(":", 1)[1])
        self.controller = start_service("budgets", self.controller_env, self.work / "budgets-restarted.log", port=port)
        self.started.append(self.controller)
        wait_ready([self.controller], START_TIMEOUT_SECONDS)

    def ledger(self) -> LeaseLedger:
        return LeaseLedger.model_validate_json(self.files.leases.read_text())

    def budget(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "lynx.cli", "budget", *args], env=self.cli_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def chat(self, gateway: ServiceProcess, body: dict, tenant: str = "leased") -> httpx.Response:
        endpoint = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        return httpx.post(f"{gateway.url}{endpoint}", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {self.keys[tenant]}"})

    def tenant_counters(self, tenant: str) -> float:
        """The sum of every gateway's own tenant counter (each process counts what it charged)."""
        return sum(metric_value(httpx.get(f"{g.url}/metrics", timeout=10).text, "lynx_tenant_cost_eur_total",
                                {"tenant": tenant}) for g in self.gateways)


@pytest.fixture(scope="module")
def bed(base_env, sink, tmp_path_factory) -> Iterator[LeaseBed]:
    work = tmp_path_factory.mktemp("leases")
    files = BudgetFiles.in_folder(work)
    controller_port = free_port()
    controller_url = f"http://127.0.0.1:{controller_port}"
    gateway_env = {"LYNX_GATEWAY_BUDGETS_FILE": str(files.decisions),
                   **lease_environment(controller_url, files.lease_token)}
    stack = start_stack(base_env, work, sink, {"gateway": gateway_env})
    started: list[ServiceProcess] = stack.processes()
    try:
        # Prometheus is left out on purpose: leases must hold the cap without it (its spend reads fail, logged).
        controller_env = {**base_env, **budget_loop_environment(files, "http://127.0.0.1:9", 1)}
        controller = start_service("budgets", controller_env, work / "budgets.log", port=controller_port)
        started.append(controller)
        upstreams = upstreams_environment({"tokenizer": stack.tokenizer.url, "retriever": stack.retriever.url,
                                           "decoder": stack.decoder.url})
        more = [start_service("gateway", {**base_env, **gateway_env, **upstreams}, work / f"gateway-{n}.log")
                for n in range(1, GATEWAYS)]
        started.extend(more)
        wait_ready([controller, *more], START_TIMEOUT_SECONDS)
        registry = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
        keys = {tenant: registry.add(tenant) for tenant in ("leased", "chaos")}
        yield LeaseBed([stack.gateway, *more], controller, files, {**base_env, **files.environment()}, keys,
                       controller_env, work, started, upstreams)
    finally:
        stop_processes(started)


def cost_told(response: httpx.Response) -> float:
    """What the client was told the request cost: the answer's (or the refusal's) lynx.cost.total."""
    return (response.json().get("lynx") or {}).get("cost", {}).get("total", 0.0)


def beyond_worst_case(response: httpx.Response) -> float:
    """What the request cost beyond the worst case it reserved (a decoder slower than its estimate: the one way past
    a cap held by leases); a refusal's whole charge, conservatively (it was paid from the cheapest request's worst case
    held since admission, which the client does not see)."""
    if response.status_code != 200:
        return cost_told(response)
    lynx = response.json()["lynx"]
    return max(lynx["cost"]["total"] - lynx["budget"]["reserved_eur"], 0.0)


def test_a_tenant_is_driven_to_blocked_through_three_gateways_and_every_cent_is_counted(bed: LeaseBed):
    bed.budget("set", "leased", "--cap", f"{CAP_EUR:g}")
    wait_for(lambda: published_state(bed.files.decisions, "leased") == "Ok", 30, "the controller's first decision")

    told, excess, answered, refused = [], [], [0] * GATEWAYS, [0] * GATEWAYS
    lock = Lock()
    turns = itertools.cycle(range(GATEWAYS))

    def send(body: dict) -> int:
        with lock:
            index = next(turns)
        response = bed.chat(bed.gateways[index], body)
        assert response.status_code in (200, 429), response.text
        with lock:
            told.append(cost_told(response))
            excess.append(beyond_worst_case(response))
            if response.status_code == 200:
                answered[index] += 1
            else:
                assert response.json()["error"]["code"] == "insufficient_quota", response.text
                refused[index] += 1
        return response.status_code

    def client() -> None:
        """Short answers back to back until three refusals in a row."""
        in_a_row = 0
        for _ in range(60):
            in_a_row = in_a_row + 1 if send(SHORT) == 429 else 0
            if in_a_row == 3:
                return

    with ThreadPoolExecutor(CLIENTS) as pool:
        for done in [pool.submit(client) for _ in range(CLIENTS)]:
            done.result()
    assert all(answered), f"every gateway served the tenant: {answered}"
    assert all(refused), f"every gateway refused the tenant once its budget ran short: {refused}"

    # What is left no longer pays a short answer: the cheapest requests, one at a time, spend the rest (the gateways
    # give back the headroom they hold unused) until the controller's ledger says the remainder cannot pay even the
    # cheapest request: Blocked.
    wait_for(lambda: send(TINY) and published_state(bed.files.decisions, "leased") == "Blocked", 180,
             "the tenant Blocked", interval=0.05)
    spent = bed.tenant_counters("leased")
    assert spent == pytest.approx(sum(told), rel=1e-9), "the gateways' counters and the costs the clients were told"
    # Past the cap only by what requests cost beyond their worst case (0 when the decoder keeps to its estimate).
    assert spent <= CAP_EUR + sum(excess) + ROUNDING_EUR, f"spent {spent} of {CAP_EUR} EUR, {sum(excess)} beyond"
    assert spent >= CAP_EUR * 0.9, f"Blocked with {spent} EUR of a {CAP_EUR} EUR cap spent"

    # Blocked: all three gateways refuse the tenant at admission, before any upstream call, for nothing.
    for gateway in bed.gateways:
        response = wait_for(lambda g=gateway: (r := bed.chat(g, TINY)).status_code == 429 and cost_told(r) == 0 and r,
                            30, f"{gateway.url} refusing the Blocked tenant at admission")
        assert "Blocked" in response.json()["error"]["message"], response.text
    assert bed.tenant_counters("leased") == pytest.approx(spent, rel=1e-12)

    # An audited raise unblocks it through all three: the controller grants from the larger cap.
    bed.budget("raise", "leased", "--amount", f"{CAP_EUR / 2:g}", "--hours", "1", "--reason", "integration test",
               "--by", "ops")
    for gateway in bed.gateways:
        wait_for(lambda g=gateway: bed.chat(g, TINY).status_code == 200, 60, f"{gateway.url} serving after the raise")
    for gateway in bed.gateways:
        renewals = metric_value(httpx.get(f"{gateway.url}/metrics", timeout=10).text,
                                "lynx_gateway_lease_renewals_total", {"outcome": "granted"})
        assert renewals >= 1


def test_a_killed_controller_and_a_killed_gateway_lose_no_charge_and_the_cap_holds(bed: LeaseBed):
    """Under load: the controller SIGKILLed and restarted (it continues from the ledger it wrote before each answer);
    then a gateway SIGKILLed while it holds a lease: its holding stays counted as spent (its counter died with it),
    so the two others never spend it."""
    bed.budget("set", "chaos", "--cap", f"{CAP_EUR:g}")
    wait_for(lambda: published_state(bed.files.decisions, "chaos") == "Ok", 30, "the controller's first decision")
    lock = Lock()
    told = {index: [] for index in range(GATEWAYS)}  # the costs each gateway's clients were told
    excess = {index: [] for index in range(GATEWAYS)}  # what they cost beyond their worst case
    statuses: list[int] = []
    victim = GATEWAYS - 1
    alive = list(range(GATEWAYS))
    turns = itertools.count()

    def client() -> None:
        refusals_in_a_row = 0
        for _ in range(80):
            with lock:
                index = alive[next(turns) % len(alive)]
            try:
                response = bed.chat(bed.gateways[index], SHORT, tenant="chaos")
            except httpx.TransportError:
                assert index == victim  # only the killed gateway drops connections; what it held is not charged
                continue
            with lock:
                statuses.append(response.status_code)
                told[index].append(cost_told(response))  # a refusal after tokenization is charged for it too
                excess[index].append(beyond_worst_case(response))
                if response.status_code not in (200, 429):
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] in ("budget_controller_unreachable",
                                                                "budget_controller_rebuilding"), response.text
            refusals_in_a_row = refusals_in_a_row + 1 if response.status_code == 429 else 0
            if refusals_in_a_row == 3:
                return

    def spent_told() -> float:
        with lock:
            return sum(sum(costs) for costs in told.values())

    with ThreadPoolExecutor(CLIENTS) as pool:
        running = [pool.submit(client) for _ in range(CLIENTS)]
        wait_for(lambda: spent_told() > CAP_EUR / 4, 60, "a quarter of the cap spent")
        epoch_before = bed.ledger().epoch
        bed.restart_controller()
        wait_for(lambda: spent_told() > CAP_EUR / 2, 60, "half the cap spent after the controller's restart")
        with lock:
            alive.remove(victim)
        bed.gateways[victim].process.kill()
        bed.gateways[victim].process.wait(10)
        for done in running:
            done.result()

    assert statuses.count(200) >= 10, statuses
    accounts = next(day.gateways for day in bed.ledger().days if day.tenant == "chaos")
    assert bed.ledger().epoch == epoch_before, "the restarted controller continued its ledger"
    # The dead gateway's counter is gone; the ledger still holds at least everything its clients were told it
    # charged (its lease's ceiling, or more), so the others could not spend it.
    dead = next(a for g, a in accounts.items() if f"-{bed.gateways[victim].process.pid}-" in g)
    assert holding_eur(dead) + sum(excess[victim]) >= sum(told[victim]) * (1 - 1e-9)
    for index in alive:
        counter = metric_value(httpx.get(f"{bed.gateways[index].url}/metrics", timeout=10).text,
                               "lynx_tenant_cost_eur_total", {"tenant": "chaos"})
        assert counter == pytest.approx(sum(told[index]), rel=1e-9), f"gateway {index}: counter and costs told"
    spent, beyond = spent_told(), sum(sum(costs) for costs in excess.values())
    assert spent <= CAP_EUR + beyond + ROUNDING_EUR, f"spent {spent} of {CAP_EUR} EUR, {beyond} beyond worst cases"
    # What the two live gateways could still get is what the dead one does not hold.
    assert sum(sum(told[i]) for i in alive) <= CAP_EUR - holding_eur(dead) + beyond + ROUNDING_EUR


# Short leases, so that a dead gateway's is reclaimed within the test: valid 10 s (an idle gateway gives its headroom
# back after half of it, time enough to kill it first), its requests over 6 s after its deadline.
PROOF_TERMS = {"LYNX_BUDGETS_LEASE_LIFETIME_SECONDS": "10", "LYNX_BUDGETS_LONGEST_REQUEST_SECONDS": "6"}
SETTLED_AFTER = timedelta(seconds=float(PROOF_TERMS["LYNX_BUDGETS_LONGEST_REQUEST_SECONDS"]))
SCRAPE_SECONDS = 0.5


@pytest.fixture(scope="module")
def proving(bed: LeaseBed, base_env) -> Iterator[LeaseBed]:
    """A controller that reads Prometheus, two gateways it leases to (in front of ``bed``'s services), and a
    Prometheus scraping both gateways as the local stack does (one job, one target per gateway)."""
    work = bed.work / "proving"
    files = BudgetFiles.in_folder(work)
    controller_url = f"http://127.0.0.1:{free_port()}"
    # Each gateway may hold half the cap beyond what its waiting request needs: the lease the dead one leaves is big.
    gateway_env = {**base_env, **bed.upstreams, **lease_environment(controller_url, files.lease_token),
                   "LYNX_GATEWAY_BUDGETS_FILE": str(files.decisions), "LYNX_GATEWAY_LEASE_MOST_OF_CAP": "0.5",
                   "LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": PROOF_TERMS["LYNX_BUDGETS_LONGEST_REQUEST_SECONDS"]}
    started: list[ServiceProcess] = []
    try:
        work.mkdir()
        gateways = [start_service("gateway", gateway_env, work / f"gateway-{n}.log") for n in range(2)]
        started.extend(gateways)
        wait_ready(gateways, START_TIMEOUT_SECONDS)
        prometheus = start_prometheus(
            required_binary("prometheus", "scripts/build_tools.sh prometheus"),
            {"global": {"scrape_interval": f"{SCRAPE_SECONDS * 1000:g}ms"},
             "scrape_configs": [{"job_name": "lynx-gateway",
                                 "static_configs": [{"targets": [target(g) for g in gateways]}]}]},
            work / "prometheus")
        started.append(prometheus)
        controller_env = {**base_env, **budget_loop_environment(files, prometheus.url, 1), **PROOF_TERMS}
        controller = start_service("budgets", controller_env, work / "budgets.log",
                                   port=int(controller_url.rsplit(":", 1)[1]))
        started.append(controller)
        wait_ready([prometheus, controller], START_TIMEOUT_SECONDS)
        keys = {"proven": TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add("proven")}
        yield LeaseBed(gateways, controller, files, {**base_env, **files.environment()}, keys, controller_env, work,
                       started, bed.upstreams, prometheus)
    finally:
        stop_processes(started)


def target(gateway: ServiceProcess) -> str:
    """The gateway's scrape target: its instance label."""
    return gateway.url.removeprefix("http://")


def prometheus_spend(prometheus: ServiceProcess, tenant: str, gateway: ServiceProcess | None = None) -> float:
    """What Prometheus holds of the tenant's spend today: every gateway's, or one gateway's (its target's series)."""
    now = datetime.now(UTC)
    labels = None if gateway is None else {"job": "lynx-gateway", "instance": target(gateway)}
    with PrometheusClient(prometheus.url) as client:
        return read_spend(client, tenant, day_window("UTC", now)[0], now, labels).spent_eur


def test_a_killed_gateways_lease_is_reclaimed_from_its_counter_and_granted_to_another(proving: LeaseBed):
    """A gateway SIGKILLed while it holds a lease with room: the controller counts the lease as fully spent until
    its deadline + the longest request have passed and Prometheus shows the gateway gone; then it holds only what the
    gateway's counter shows it charged, and the live gateway is granted the rest. No charge is lost."""
    bed, tenant = proving, "proven"
    live, victim = bed.gateways
    bed.budget("set", tenant, "--cap", f"{CAP_EUR:g}")
    wait_for(lambda: published_state(bed.files.decisions, tenant) == "Ok", 30, "the controller's first decision")
    told = {live.url: [], victim.url: []}
    excess = {live.url: [], victim.url: []}

    def send(gateway: ServiceProcess, body: dict) -> int:
        response = bed.chat(gateway, body, tenant=tenant)
        assert response.status_code in (200, 429), response.text
        told[gateway.url].append(cost_told(response))
        excess[gateway.url].append(beyond_worst_case(response))
        return response.status_code

    # The victim serves one request (a request costs its hardware time: several on a busy machine could cost what its
    # lease holds) and is left with a lease that has room.
    assert send(live, SHORT) == 200 and send(victim, SHORT) == 200 and send(live, SHORT) == 200

    # The victim idles (it has charged everything it was asked to) until Prometheus holds its whole counter...
    victim_counter = metric_value(httpx.get(f"{victim.url}/metrics", timeout=10).text, "lynx_tenant_cost_eur_total",
                                  {"tenant": tenant})
    assert victim_counter == pytest.approx(sum(told[victim.url]), rel=1e-9)
    wait_for(lambda: prometheus_spend(bed.prometheus, tenant, victim) == pytest.approx(victim_counter, rel=1e-12),
             30, "Prometheus holding the victim's final counter", interval=0.1)

    def victims_account():
        day = bed.ledger().day(tenant, day_window("UTC", datetime.now(UTC))[0])
        return next(a for g, a in day.gateways.items() if f"-{victim.process.pid}-" in g)

    # ...and is killed while its lease still has room: the ledger holds more for it than it charged.
    victim.process.kill()
    victim.process.wait(10)
    held = victims_account()
    assert held.leases and holding_eur(held) > victim_counter + CAP_EUR / 10, (victim_counter, held)
    settles_at = max(lease.expires_at for lease in held.leases) + SETTLED_AFTER

    def released() -> bool:
        """The victim's account holding only its counter; until its leases have settled, all of them."""
        account = victims_account()
        if datetime.now(UTC) < settles_at:  # read before now: a release written then would be early
            assert holding_eur(account) == holding_eur(held), "reclaimed before its requests could all have ended"
        return not account.leases and account.charged_eur == pytest.approx(victim_counter, rel=1e-9)

    # The live gateway spends what is free meanwhile, until refused (the dead lease is all that is left)...
    refused = []

    def spend_until_released() -> bool:
        if not refused and send(live, SHORT) == 429:
            refused.append(True)
        return released()

    wait_for(spend_until_released, 90, "the dead gateway's lease reclaimed", interval=0.2)
    assert datetime.now(UTC) >= settles_at
    # Its remainder was all held by the dead lease (Blocked, perhaps): the decision published after the reclaim is not.
    wait_for(lambda: published_state(bed.files.decisions, tenant) in ("Ok", "Warning"), 30,
             "the tenant's decision once the lease is reclaimed")
    # ...then what the dead one held beyond its charges: short answers while they fit, then the cheapest requests,
    # until the tenant is Blocked.
    body, granted = [SHORT], [0.0]

    def spend_until_blocked() -> bool:
        if send(live, body[0]) == 429:
            body[0] = TINY
        ledger = bed.ledger()
        day = ledger.day(tenant, day_window("UTC", datetime.now(UTC))[0])
        granted[0] = max(granted[0], *(lease.ceiling_eur for g, a in day.gateways.items()
                                       if f"-{live.process.pid}-" in g for lease in a.leases))
        return published_state(bed.files.decisions, tenant) == "Blocked"

    wait_for(spend_until_blocked, 90, "the tenant Blocked through the live gateway", interval=0.05)
    assert granted[0] > CAP_EUR - holding_eur(held), "the live gateway was granted part of what the dead one held"
    spent_live, beyond = sum(told[live.url]), sum(excess[live.url])
    assert spent_live > CAP_EUR - holding_eur(held), "the live gateway spent part of what the dead one held"

    # No charge lost: each gateway's counter (the dead one's as Prometheus last scraped it) equals the costs told,
    # and the ledger's confirmed spend, once it has settled every lease, equals Prometheus' tenant counter.
    live_counter = metric_value(httpx.get(f"{live.url}/metrics", timeout=10).text, "lynx_tenant_cost_eur_total",
                                {"tenant": tenant})
    assert live_counter == pytest.approx(spent_live, rel=1e-9)
    assert prometheus_spend(bed.prometheus, tenant, victim) == pytest.approx(sum(told[victim.url]), rel=1e-9)
    total = spent_live + sum(told[victim.url])
    wait_for(lambda: prometheus_spend(bed.prometheus, tenant) == pytest.approx(total, rel=1e-9), 30,
             "Prometheus holding every charge")
    day = day_window("UTC", datetime.now(UTC))[0]
    wait_for(lambda: confirmed_eur(bed.ledger(), tenant, day) == pytest.approx(total, rel=1e-9), 60,
             "the ledger's confirmed spend equal to Prometheus' tenant counter",
             explain=lambda: f"ledger {confirmed_eur(bed.ledger(), tenant, day)}, Prometheus {total}")
    assert total <= CAP_EUR + beyond + ROUNDING_EUR
