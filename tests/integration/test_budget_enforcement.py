"""Budgets bite: real services, the real local budget loop, a real Prometheus scraping the gateway and the loop.

The loop reads each tenant's spend from Prometheus, decides with the shared policy and publishes the decisions
to the file the gateway re-reads; `lynx budget` (the real command line) edits the budgets file. Every figure
checked here comes from somewhere other than the code that computed it: the answers' own costs, the tokenizer's
request counter, the loop's exported spend.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lynx.contracts.budgets import BudgetDecisions, BudgetStanding, TenantDecision
from lynx.local.stopping import stop_processes
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_prometheus
from lynx.local.topology import BudgetFiles, budget_loop_environment, usage_environment
from lynx.telemetry.prometheus_api import PrometheusClient

from .conftest import (
    MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, published_state, required_binary, start_stack, wait_for,
)

pytestmark = pytest.mark.integration
CAP_EUR = 2e-4  # about ten short answers
SHORT = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 24, "retrieval_top_k": 0,
         "messages": [{"role": "user", "content": "Name three colours."}]}
# Retrieval puts passages in the prompt: its worst case no longer fits once the short answers have spent the budget,
# so it is refused after retrieval and tokenization, and charged for those two stages.
WITH_PASSAGES = {**SHORT, "retrieval_top_k": 3, "messages": [{"role": "user", "content": "How do I open a file?"}]}


@dataclass
class BudgetBed:
    stack: Stack
    loop: ServiceProcess
    prometheus: ServiceProcess
    decisions: Path
    cli_env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)

    def budget(self, *args: str) -> str:
        """`lynx budget ...`, the real command line, on the loop's budgets file."""
        done = subprocess.run([sys.executable, "-m", "lynx.cli", "budget", *args], env=self.cli_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def state(self, tenant: str) -> str | None:
        return published_state(self.decisions, tenant)

    def chat(self, tenant: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.stack.gateway.url}/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {self.keys[tenant]}"})


@pytest.fixture(scope="module")
def bed(base_env, sink, tmp_path_factory) -> Iterator[BudgetBed]:
    work = tmp_path_factory.mktemp("budgets")
    prometheus_binary = required_binary("prometheus", "scripts/build_tools.sh prometheus")
    budget_files = BudgetFiles.in_folder(work)
    decisions = budget_files.decisions
    cli_env = {**base_env, **budget_files.environment()}
    prometheus_port = free_port()  # the gateway's usage report reads the Prometheus started once it runs
    stack = start_stack(base_env, work, sink, {"gateway": {
        "LYNX_GATEWAY_BUDGETS_FILE": str(decisions), **usage_environment(f"http://127.0.0.1:{prometheus_port}")}})
    started: list[ServiceProcess] = stack.processes()
    try:
        loop_port = free_port()
        config = prometheus_config(load_config("prometheus.yml"), {
            "gateway": stack.gateway.url.removeprefix("http://"), "budgets": f"127.0.0.1:{loop_port}"})
        config["global"]["scrape_interval"] = "1s"
        prometheus = start_prometheus(prometheus_binary, config, work / "prometheus", port=prometheus_port)
        started.append(prometheus)
        loop = start_service("budgets", {**base_env, **budget_loop_environment(budget_files, prometheus.url, 1)},
                             work / "budgets.log", port=loop_port)
        started.append(loop)
        wait_ready([prometheus, loop], START_TIMEOUT_SECONDS)
        running = BudgetBed(stack, loop, prometheus, decisions, cli_env)
        registry = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"]))
        running.keys = {name: registry.add(name) for name in ("capped", "roomy", "budgetless", "headed", "nosy")}
        yield running
    finally:
        stop_processes(started)


def paris_midnight() -> str:
    """The next midnight in Europe/Paris, in UTC as the refusal writes it."""
    now = datetime.now(ZoneInfo("Europe/Paris"))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    return midnight.astimezone(UTC).isoformat().replace("+00:00", "Z")


def api_calls(service: ServiceProcess) -> float:
    """Requests the service served on its API (/v1/...), probes and scrapes left out."""
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "lynx_request_total" and sample.labels["endpoint"].startswith("/v1/"))


def charged(response: httpx.Response) -> float:
    """What the ledger charged the request, as the answer (or the error body) says."""
    return (response.json().get("lynx") or {}).get("cost", {}).get("total", 0.0)


def test_a_capped_tenant_is_warned_blocked_and_unblocked_by_a_raise(bed: BudgetBed):
    bed.budget("set", "capped", "--cap", str(CAP_EUR), "--warning", "50", "--timezone", "Europe/Paris")
    bed.budget("set", "roomy", "--cap", "1")
    wait_for(lambda: bed.state("capped") == "Ok", 30, "the loop's first decision for the capped tenant")

    # Short answers until the budget no longer covers one.
    spent_by_answers, first_refusal = 0.0, None
    for _ in range(60):
        response = bed.chat("capped", SHORT)
        spent_by_answers += charged(response)
        if response.status_code == 429:
            first_refusal = response
            break
        assert response.status_code == 200, response.text
    assert first_refusal is not None, "the budget never ran out"
    error = first_refusal.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "max_tokens" in error["message"] and "raise" in error["message"] and paris_midnight() in error["message"]
    assert 0 < int(first_refusal.headers["Retry-After"]) <= 25 * 3600
    assert charged(first_refusal) > 0  # refused after tokenization: charged for it
    # What is left is less than one short answer's worst case: more than the warning threshold is spent.
    wait_for(lambda: bed.state("capped") == "Warning", 30, "the loop to see the tenant past its warning threshold")

    # Asking on with bigger prompts: each refused after retrieval and tokenization, and charged for them, until the
    # spend reaches the cap and the loop says Blocked.
    def ask_with_passages(_: int) -> float:
        if bed.state("capped") == "Blocked":
            return 0.0
        response = bed.chat("capped", WITH_PASSAGES)
        assert response.status_code in (200, 429), response.text
        return charged(response)

    with ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 120
        while bed.state("capped") != "Blocked" and time.monotonic() < deadline:
            spent_by_answers += sum(pool.map(ask_with_passages, range(16)))
    assert bed.state("capped") == "Blocked", "the capped tenant never reached Blocked"
    assert spent_by_answers >= CAP_EUR

    # The loop's spend is the gateway's counter as Prometheus scraped it: the answers' own costs, summed.
    def loop_spent() -> float:
        return metric_value(httpx.get(f"{bed.loop.url}/metrics", timeout=10).text, "lynx_budget_spent_eur",
                            {"tenant": "capped"})
    wait_for(lambda: loop_spent() == pytest.approx(spent_by_answers, rel=1e-9), 30, "the loop to read the last charge")

    # Blocked: refused before any upstream call.
    tokenizer_calls, retriever_calls = api_calls(bed.stack.tokenizer), api_calls(bed.stack.retriever)
    refused = bed.chat("capped", WITH_PASSAGES)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert "lynx budget" not in refused.json()["error"]["message"]  # the policy's reason, in the tenant's terms
    assert "cost" not in refused.json()["lynx"]  # nothing consumed, nothing charged
    assert (api_calls(bed.stack.tokenizer), api_calls(bed.stack.retriever)) == (tokenizer_calls,
                                                                                        retriever_calls)
    gateway_metrics = httpx.get(f"{bed.stack.gateway.url}/metrics", timeout=10).text
    assert metric_value(gateway_metrics, "lynx_budget_refused_requests_total",
                        {"tenant": "capped", "reason": "blocked"}) >= 1
    assert metric_value(gateway_metrics, "lynx_budget_reserved_eur", {"tenant": "capped"}) == 0.0  # all settled

    served = bed.chat("roomy", SHORT)  # another tenant is still served
    assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"]

    assert "Blocked" in bed.budget("why", "capped")
    bed.budget("raise", "capped", "--amount", "0.01", "--hours", "2", "--reason", "integration test",
               "--by", "the-test")
    wait_for(lambda: bed.chat("capped", SHORT).status_code == 200, 30, "the raise to unblock the tenant")
    assert bed.state("capped") in ("Ok", "Warning")
    assert "Raise in force" in bed.budget("why", "capped")
    export = bed.budget("export", "--prometheus", bed.prometheus.url).splitlines()
    assert export[0].startswith("tenant,state,spent_eur") and any(line.startswith("capped,") for line in export)


def test_a_cost_ceiling_ends_the_answer_with_length(bed: BudgetBed):
    bed.budget("set", "roomy", "--cap", "1")
    wait_for(lambda: bed.state("roomy") is not None, 30, "the loop's decision for the roomy tenant")
    long_answer = {**SHORT, "max_tokens": 200, "messages": [{"role": "user", "content": "Count from 1 to 100."}]}
    free = bed.chat("roomy", long_answer).json()
    assert free["usage"]["completion_tokens"] > 20
    # The ceiling is what 8 tokens of this prompt reserve: it affords about 8, far fewer than the answer has.
    ceiling = bed.chat("roomy", {**long_answer, "max_tokens": 8}).json()["lynx"]["budget"]["reserved_eur"]
    for stream in (False, True):
        last = final_body(bed.chat("roomy", {**long_answer, "lynx_max_cost_eur": ceiling, "stream": stream}))
        assert last["choices"][0]["finish_reason"] == "length"
        assert 4 <= last["lynx"]["budget"]["max_tokens"] <= 8
        assert last["lynx"]["budget"]["reserved_eur"] <= ceiling
    # A ceiling below any answer's worst case still gets one token, never an error.
    tiny = final_body(bed.chat("roomy", {**long_answer, "lynx_max_cost_eur": 1e-12}))
    assert tiny["choices"][0]["finish_reason"] == "length" and tiny["usage"]["completion_tokens"] == 1


def test_export_lists_the_tenants_without_a_budget_that_spent_today(bed: BudgetBed):
    """Every tenant with spend today, budget or none: the one without, its spend as its answers reported it, its cap
    and state empty; a budget removed with `lynx budget remove` turns its tenant into one of those."""
    bed.budget("set", "roomy", "--cap", "1")
    spent = sum(charged(bed.chat("budgetless", SHORT)) for _ in range(2))
    assert spent > 0

    def exported(tenant: str) -> list[str] | None:
        lines = bed.budget("export", "--prometheus", bed.prometheus.url).splitlines()
        return next((line.split(",") for line in lines if line.startswith(f"{tenant},")), None)

    def budgetless_spend_read() -> list[str] | None:
        row = exported("budgetless")
        return row if row and float(row[2]) == pytest.approx(spent, rel=1e-9) else None

    row = wait_for(budgetless_spend_read, 30, "the export to show the budgetless tenant's spend")
    assert (row[1], row[3], row[4]) == ("", "", "")  # no state, no cap, nothing remaining without a cap
    assert exported("roomy")[3] == "1"

    roomy_spent = charged(bed.chat("roomy", SHORT))
    bed.budget("remove", "roomy")
    wait_for(lambda: bed.state("roomy") is None, 30, "the loop to drop the removed budget from its decisions")
    served = bed.chat("roomy", SHORT)  # a tenant without a budget now, served (LYNX_BUDGETS_UNKNOWN_TENANTS open)
    assert served.status_code == 200, served.text
    row = wait_for(lambda: (r := exported("roomy")) and r[3] == "" and r, 30, "roomy listed without a cap")
    assert float(row[2]) >= roomy_spent


def final_body(response: httpx.Response) -> dict:
    """The answer, or the stream's chunk that carries finish_reason and the lynx object."""
    assert response.status_code == 200, response.text
    if not response.headers["content-type"].startswith("text/event-stream"):
        return response.json()
    chunks = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: {")]
    return next(body for body in map(json.loads, chunks) if "lynx" in body)


# --- The budget in every answer (x-lynx-budget-* headers, the Warning notice) and GET /v1/lynx/usage.
def published(bed: BudgetBed, tenant: str) -> TenantDecision:
    return BudgetDecisions.model_validate_json(bed.decisions.read_text()).tenants[tenant]


HEADED_CAP_EUR = 4 * CAP_EUR  # enough for a few answers once in Warning


def left(spent: float) -> float:
    """What the headers say is left of the headed tenant's cap (an answer may cost more than its worst case)."""
    return max(HEADED_CAP_EUR - spent, 0.0)


def counted_by_prometheus(bed: BudgetBed, tenant: str) -> float:
    """The tenant's cost counters summed, as Prometheus last scraped them (the TSDB is this test's own: every charge
    of the tenant is in it, and no gateway restarted)."""
    with PrometheusClient(bed.prometheus.url) as prometheus:
        rows = prometheus.query(f'sum(lynx_tenant_cost_eur_total{{tenant="{tenant}"}})')
    return float(rows[0]["value"][1]) if rows else 0.0


def usage(bed: BudgetBed, key_of: str | None, params: dict[str, str] | None = None) -> httpx.Response:
    """GET /v1/lynx/usage with ``key_of``'s key (None: without a key)."""
    headers = {"Authorization": f"Bearer {bed.keys[key_of]}"} if key_of else {}
    return httpx.get(f"{bed.stack.gateway.url}/v1/lynx/usage", headers=headers, params=params, timeout=60)


def test_every_answer_carries_the_budget_as_the_controller_and_the_answers_count_it(bed: BudgetBed):
    bed.budget("set", "headed", "--cap", str(HEADED_CAP_EUR), "--warning", "50", "--timezone", "Europe/Paris")
    wait_for(lambda: bed.state("headed") == "Ok", 30, "the loop's first decision for the headed tenant")
    spent = 0.0  # the answers' own costs
    while bed.state("headed") == "Ok":
        answer = bed.chat("headed", SHORT)
        assert answer.status_code == 200, answer.text
        spent += charged(answer)
        budget, decision = BudgetStanding.from_headers(answer.headers), published(bed, "headed")
        assert (budget.cap_eur, budget.resets_at) == (HEADED_CAP_EUR, decision.resets_at)
        assert budget.remaining_eur == pytest.approx(left(spent), rel=1e-9)  # its own charge included
        assert answer.json()["lynx"]["budget"]["notice"] is None
        if spent >= HEADED_CAP_EUR / 2:
            wait_for(lambda: bed.state("headed") == "Warning", 30, "the loop to see the tenant past 50 %")
    assert bed.state("headed") == "Warning"
    wait_for(lambda: counted_by_prometheus(bed, "headed") == pytest.approx(spent, rel=1e-9), 30,
             "Prometheus to scrape the last charge")

    warned = bed.chat("headed", SHORT)
    assert warned.status_code == 200, warned.text
    spent += charged(warned)
    budget, body = BudgetStanding.from_headers(warned.headers), warned.json()["lynx"]["budget"]
    assert budget.state == body["state"] == "Warning"
    assert budget.remaining_eur == pytest.approx(left(spent), rel=1e-9)
    assert "headed" in body["notice"] and f"{left(spent):.4g} EUR of {HEADED_CAP_EUR:.4g} EUR left" in body["notice"]

    # A stream's headers go out before its first chunk: its own charge is not in them; its last chunk has the notice.
    streamed = bed.chat("headed", {**SHORT, "stream": True})
    assert BudgetStanding.from_headers(streamed.headers).remaining_eur == pytest.approx(left(spent), rel=1e-9)
    spent += final_body(streamed)["lynx"]["cost"]["total"]
    last = final_body(streamed)["lynx"]["budget"]
    assert last["state"] == "Warning" and f"{left(spent):.4g} EUR of" in last["notice"]  # after the stream

    invalid = bed.chat("headed", {**SHORT, "max_tokens": 10**6})  # refused before anything is spent
    assert invalid.status_code == 400
    assert BudgetStanding.from_headers(invalid.headers).remaining_eur == pytest.approx(left(spent), rel=1e-9)

    bed.budget("pause", "headed")
    wait_for(lambda: bed.state("headed") == "Paused", 30, "the loop to publish the pause")
    refused = bed.chat("headed", SHORT)
    assert refused.status_code == 429
    paused = BudgetStanding.from_headers(refused.headers)
    assert (paused.state, paused.remaining_eur, paused.cap_eur) == ("Paused", 0.0, HEADED_CAP_EUR)
    assert int(refused.headers["x-lynx-budget-reset-seconds"]) == pytest.approx(
        published(bed, "headed").resets_at.timestamp() - time.time(), abs=5)
    assert BudgetStanding.from_headers(bed.chat("budgetless", SHORT).headers) is None  # no budget, no headers
    assert BudgetStanding.from_headers(
        httpx.post(f"{bed.stack.gateway.url}/v1/chat/completions", json=SHORT, timeout=60).headers) is None  # no key
    bed.budget("resume", "headed")


def test_usage_is_the_tenants_own_spend_in_prometheus_with_the_controllers_budget(bed: BudgetBed):
    missing_key = usage(bed, None)
    assert missing_key.status_code == 401 and missing_key.json()["error"]["code"] == "missing_api_key"

    bed.budget("set", "headed", "--cap", "1", "--timezone", "Europe/Paris")
    spent = sum(charged(bed.chat("headed", SHORT)) for _ in range(2))
    nosy_spent = charged(bed.chat("nosy", SHORT))  # a tenant without a budget
    assert spent > 0 and nosy_spent > 0

    def exported(tenant: str) -> float:
        """The gateway's own counter, read from the process."""
        return metric_value(httpx.get(f"{bed.stack.gateway.url}/metrics", timeout=10).text,
                            "lynx_tenant_cost_eur_total", {"tenant": tenant})
    wait_for(lambda: all(counted_by_prometheus(bed, t) == pytest.approx(exported(t), rel=1e-9) for t in ("headed", "nosy")),
             30, "Prometheus to scrape the last charges")
    assert exported("nosy") == pytest.approx(nosy_spent, rel=1e-9)
    wait_for(lambda: published(bed, "headed").cap_eur == 1.0, 30, "the loop to publish the new cap")

    report = usage(bed, "headed")
    assert report.status_code == 200, report.text
    figures, decision = report.json(), published(bed, "headed")
    # The counter as Prometheus holds it, read independently of the gateway (an earlier test charged the tenant too).
    total = counted_by_prometheus(bed, "headed")
    for window in ("spent_today_eur", "spent_7_days_eur", "spent_30_days_eur"):
        assert figures[window] == pytest.approx(total, rel=1e-9), window
    assert (figures["tenant"], figures["state"], figures["cap_eur"]) == ("headed", decision.state, 1.0)
    assert figures["remaining_eur"] == pytest.approx(1.0 - total, rel=1e-9)
    assert datetime.fromisoformat(figures["resets_at"]) == decision.resets_at
    assert datetime.fromisoformat(figures["day_started_at"]) == decision.day_started_at
    assert BudgetStanding.from_headers(report.headers).state == decision.state

    # A tenant sees its own usage only, whatever it asks for.
    nosy = usage(bed, "nosy", {"tenant": "headed"})
    assert nosy.status_code == 200, nosy.text
    assert (nosy.json()["tenant"], nosy.json()["state"], nosy.json()["cap_eur"]) == ("nosy", "unbudgeted", None)
    assert nosy.json()["spent_today_eur"] == pytest.approx(nosy_spent, rel=1e-9)
