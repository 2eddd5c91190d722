"""A request's log events, read from the real gateway's log: request_started and request_finished under one request id
and one start time, every event with an id of its own; a refusal at admission naming the tenant and the reason; a
request that fails the identity check logging one cost_identity_violation per failed check, with the stage, both
figures and the trace id."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from lynx.contracts.budgets import BudgetDecisions, TenantDecision
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.service.files import write_atomically

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, wait_for


def logged(service: ServiceProcess, request_id: str) -> list[dict]:
    """The service's log events of one request, in the order written."""
    lines = (json.loads(line) for line in service.log.read_text().splitlines() if line.startswith("{"))
    return [event for event in lines if event.get("request_id") == request_id]


def names(events: list[dict]) -> list[str]:
    return [event["event"] for event in events]


def unix_time(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def chat(gateway: ServiceProcess, key: str, request_id: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {key}", "X-Request-ID": request_id},
                      json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 4,
                            "messages": [{"role": "user", "content": "What is a tuple?"}]})


def request_logged(service: ServiceProcess, request_id: str) -> list[dict]:
    """The request's events once the middleware's closing ``request`` line is written (the last one of a request)."""
    wait_for(lambda: "request" in names(logged(service, request_id)), 10, f"{service.name} to log {request_id}",
             explain=lambda: f"its events so far: {names(logged(service, request_id))}")
    return logged(service, request_id)


def test_a_request_s_events_share_its_id_and_start_time_and_each_has_an_id_of_its_own(stack: Stack):
    request_id = f"events-{uuid.uuid4().hex[:8]}"
    sent = time.time()
    response = chat(stack.gateway, stack.key, request_id)
    answered = time.time()
    assert response.status_code == 200, response.text
    events = request_logged(stack.gateway, request_id)
    order = names(events)
    assert order.index("request_started") < order.index("request_finished") < order.index("request"), order
    started, finished = events[order.index("request_started")], events[order.index("request_finished")]
    assert started["tenant"] == finished["tenant"] == stack.tenant and started["model"] == MODEL_NAME
    assert finished["trace_id"] == response.headers["x-lynx-trace-id"]
    assert len({e["event_id"] for e in events}) == len(events)
    (start,) = {e["request_started_at"] for e in events}
    assert sent - 0.001 <= unix_time(start) <= answered  # the log's clock against the test's (to its millisecond)
    assert unix_time(start) <= unix_time(started["ts"]) <= unix_time(finished["ts"])


@dataclass
class StrictGateway:
    """A gateway in front of the session stack's services whose identity check has no tolerance (a floor of 1 ns,
    nothing relative), so the microseconds its own code runs between two stage timers are a missing timer; and whose
    budgets pause one tenant."""

    gateway: ServiceProcess
    paused_key: str
    paused_tenant: str
    served_key: str


@pytest.fixture(scope="module")
def strict(stack: Stack, base_env, tmp_path_factory) -> Iterator[StrictGateway]:
    work = tmp_path_factory.mktemp("events")
    paused = f"paused-{uuid.uuid4().hex[:8]}"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    decision = TenantDecision(tenant=paused, state="Paused", cap_eur=1.0, spent_eur=0.0, remaining_eur=0.0,
                              day_started_at=today, resets_at=today + timedelta(days=1), spend_as_of=None,
                              reason=f"Paused by an admin for {paused}'s test.")
    decisions = work / "decisions.json"
    write_atomically(decisions, BudgetDecisions(generated_at=datetime.now(UTC), source="local",
                                                tenants={paused: decision}).model_dump_json())
    gateway = start_service("gateway", {
        **base_env, **stack.upstreams_environment(), "LYNX_GATEWAY_BUDGETS_FILE": str(decisions),
        "LYNX_COST_IDENTITY_TOLERANCE": "0", "LYNX_COST_UNTIMED_BOUND_SECONDS": "1e-9"}, work / "gateway.log")
    try:
        wait_ready([gateway], START_TIMEOUT_SECONDS)
        key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(paused)
        yield StrictGateway(gateway, key, paused, stack.key)
    finally:
        gateway.stop()


def test_a_refusal_at_admission_logs_the_tenant_and_the_reason(strict: StrictGateway):
    request_id = f"refused-{uuid.uuid4().hex[:8]}"
    response = chat(strict.gateway, strict.paused_key, request_id)
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota", response.text
    events = request_logged(strict.gateway, request_id)
    assert names(events) == ["request_started", "request_refused", "request"]  # refused before any stage: no charge
    refused = events[1]
    assert (refused["tenant"], refused["reason"], refused["phase"], refused["status"]) == (
        strict.paused_tenant, "paused", "admission", 429)
    assert refused["message"] == response.json()["error"]["message"]
    assert len({e["event_id"] for e in events}) == 3 and len({e["request_started_at"] for e in events}) == 1


def test_a_request_failing_the_identity_check_logs_each_violation_with_its_figures(strict: StrictGateway):
    request_id = f"violation-{uuid.uuid4().hex[:8]}"
    sent = time.monotonic()
    response = chat(strict.gateway, strict.served_key, request_id)
    round_trip = time.monotonic() - sent
    assert response.status_code == 200, response.text
    assert response.json()["lynx"]["cost_identity_ok"] is False
    events = request_logged(strict.gateway, request_id)
    violations = [e for e in events if e["event"] == "cost_identity_violation"]
    (finished,) = [e for e in events if e["event"] == "request_finished"]
    assert sorted({v["reason"] for v in violations}) == finished["identity_violations"]
    (untimed,) = [v for v in violations if v["reason"] == "stage_missing_timer"]
    assert untimed["stage"] == "other" and untimed["trace_id"] == response.headers["x-lynx-trace-id"]
    assert untimed["level"] == "warning" and untimed["tolerance_seconds"] == 1e-9
    # The two figures: the gateway's stopwatch (shorter than the round trip the test timed itself) and the stage
    # timers, which leave out the gateway's code between them.
    assert 0 < untimed["accounted_seconds"] < untimed["measured_seconds"] <= round_trip
    assert untimed["measured_seconds"] == pytest.approx(finished["duration_s"])
    text = httpx.get(f"{strict.gateway.url}/metrics", timeout=10).text
    assert metric_value(text, "lynx_cost_identity_violations_total", {"reason": "stage_missing_timer"}) >= 1
