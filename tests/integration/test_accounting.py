"""Every way a request ends is charged once, the same everywhere; the decoder's time is all accounted for.

Real processes: the four services export to a real Jaeger; the decoder and tokenizer run with fault
injection switched on (it is off by default) so a decoder failure and a slow stage can be planted.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import defaultdict

import httpx
import pytest

from lynx.auditor.audit import orphans_in_trace
from lynx.telemetry.tracestore import TraceStoreClient
from lynx.local.processes import start_service, wait_ready

from .conftest import MODEL_NAME, ObservedStack, Stack, metric_value, wait_for

OUTCOMES = ("completed", "client_closed", "failed", "deadline")


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def tenant_spend(stack: Stack) -> dict[str, float]:
    text = scrape(stack.gateway.url)
    spend = {}
    for outcome in OUTCOMES:
        try:
            spend[outcome] = metric_value(text, "lynx_tenant_cost_eur_total", {"tenant": stack.tenant, "outcome": outcome})
        except KeyError:
            spend[outcome] = 0.0
    return spend


def decoder_clock(stack: Stack) -> tuple[float, float, tuple[float, float]]:
    """(busy seconds, idle seconds, the test's own clock just before and just after the scrape that read them)."""
    sent = time.monotonic()
    text = scrape(stack.decoder.url)
    answered = time.monotonic()
    return (metric_value(text, "lynx_decoder_busy_seconds_total"), metric_value(text, "lynx_decoder_idle_seconds_total"),
            (sent, answered))


def quiet(stack: Stack) -> bool:
    text = scrape(stack.decoder.url)
    return metric_value(text, "lynx_kv_cache_slots_used") == 0 and metric_value(text, "lynx_queue_depth") == 0


def ledger_events(stack: Stack) -> dict[str, dict]:
    events = {}
    for line in stack.gateway.log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") in ("request_finished", "request_failed"):
                events[entry["request_id"]] = entry
    return events


def set_faults(service_url: str, **plan) -> None:
    response = httpx.put(f"{service_url}/admin/faults", json=plan, timeout=10)
    assert response.status_code == 200, response.text


def chat_body(content: str, max_tokens: int, stream: bool, **fields) -> dict:
    return {"model": MODEL_NAME, "temperature": 0, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": content}], **fields}


class Requests:
    """The requests sent, by name: their request id, trace id and what the client was told."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.sent: dict[str, dict] = {}

    def headers(self, name: str) -> dict[str, str]:
        request_id = f"acct-{name}-{uuid.uuid4().hex[:8]}"
        self.sent[name] = {"request_id": request_id}
        return {**self.stack.headers(), "X-Request-ID": request_id}

    def record(self, name: str, response: httpx.Response, **told) -> None:
        assert response.headers["x-request-id"] == self.sent[name]["request_id"]
        self.sent[name].update(trace_id=response.headers["x-lynx-trace-id"], **told)

    def stream(self, name: str, body: dict, read_events: int | None = None, on_read=None) -> list[dict]:
        url = f"{self.stack.gateway.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=self.headers(name), timeout=60) as response:
            assert response.status_code == 200, response.read()
            self.record(name, response)
            events = []
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[len("data: "):]))
                    if read_events is not None and len(events) == read_events:
                        if on_read is None:
                            return events  # the client hangs up mid-stream
                        on_read()
        return events

    def post(self, name: str, body: dict) -> httpx.Response:
        response = httpx.post(f"{self.stack.gateway.url}/v1/chat/completions", json=body, headers=self.headers(name),
                              timeout=60)
        self.record(name, response)
        return response


@pytest.fixture(scope="module")
def accounted(faulty: Stack) -> dict:
    """Five requests, each ending a different way, on a quiet decoder, with the counters read around them."""
    stack = faulty
    assert httpx.post(f"{stack.gateway.url}/v1/chat/completions", headers=stack.headers(),
                      json=chat_body("warm up", 2, False), timeout=60).status_code == 200
    wait_for(lambda: quiet(stack), 30, "a quiet decoder")
    spend_before, clock_before = tenant_spend(stack), decoder_clock(stack)
    requests = Requests(stack)

    events = requests.stream("completed", chat_body("What is the capital of France?", 12, True))
    requests.sent["completed"]["cost"] = next(e for e in events if e.get("lynx"))["lynx"]["cost"]["total"]

    requests.stream("client_closed", chat_body("Write a long story about a lynx.", 400, True, retrieval_top_k=0),
                    read_events=3)

    def break_the_decoder() -> None:
        set_faults(stack.decoder.url, step_error_rate=1.0)
    try:
        events = requests.stream("failed", chat_body("Write a long story about a fox.", 400, True, retrieval_top_k=0),
                                 read_events=3, on_read=break_the_decoder)
    finally:
        set_faults(stack.decoder.url)
    error = events[-1]["error"]
    requests.sent["failed"].update(error_code=error["code"], cost=events[-1]["lynx"]["cost"]["total"])

    response = requests.post("deadline", chat_body("Write a long story about a bear.", 1000, False, retrieval_top_k=0))
    assert response.status_code == 200, response.text
    requests.sent["deadline"].update(finish_reason=response.json()["choices"][0]["finish_reason"],
                                     cost=response.json()["lynx"]["cost"]["total"])

    set_faults(stack.tokenizer.url, latency_seconds=5.5)
    try:
        response = requests.post("timed_out", chat_body("Hello?", 16, False, retrieval_top_k=0))
    finally:
        set_faults(stack.tokenizer.url)
    requests.sent["timed_out"].update(status=response.status_code, body=response.json())

    wait_for(lambda: quiet(stack), 30, "the decoder to finish every sequence")
    ids = {name: sent["request_id"] for name, sent in requests.sent.items()}
    events = wait_for(lambda: (lambda e: e if set(ids.values()) <= set(e) else None)(ledger_events(stack)), 30,
                        "a ledger event for every request")
    clock_after, spend_after = decoder_clock(stack), tenant_spend(stack)
    return {"sent": requests.sent, "events": {name: events[rid] for name, rid in ids.items()},
            "spend": {o: spend_after[o] - spend_before[o] for o in OUTCOMES},
            "clock": (clock_before, clock_after), "stack": stack}


def test_each_request_is_charged_with_how_it_ended(accounted):
    outcomes = {name: event["outcome"] for name, event in accounted["events"].items()}
    assert outcomes == {"completed": "completed", "client_closed": "client_closed", "failed": "failed",
                        "deadline": "deadline", "timed_out": "deadline"}
    sent = accounted["sent"]
    assert sent["failed"]["error_code"] == "upstream_error"
    assert sent["deadline"]["finish_reason"] == "deadline"
    assert sent["timed_out"]["status"] == 504
    assert sent["timed_out"]["body"]["error"]["code"] == "deadline_exceeded"
    for name, event in accounted["events"].items():
        assert event["cost_eur"] > 0, name
        assert event["tenant"] == accounted["stack"].tenant
        assert event["trace_id"] == sent[name]["trace_id"]
        assert event["event"] == ("request_finished" if name == "completed" else "request_failed")
    assert accounted["events"]["client_closed"]["completion_tokens"] >= 2  # read: the role chunk and two deltas
    assert accounted["events"]["client_closed"]["stage_seconds"]["decode"] > 0


def test_the_tenant_counter_the_log_events_and_the_answers_agree(accounted):
    events = accounted["events"]
    logged = defaultdict(float)
    for event in events.values():
        logged[event["outcome"]] += event["cost_eur"]
    for outcome in OUTCOMES:
        assert accounted["spend"][outcome] == pytest.approx(logged[outcome], rel=1e-9, abs=1e-15), outcome
    sent = accounted["sent"]
    for name in ("completed", "failed", "deadline"):
        assert sent[name]["cost"] == pytest.approx(events[name]["cost_eur"], rel=1e-9), name
    assert sent["timed_out"]["body"]["lynx"]["cost"]["total"] == pytest.approx(events["timed_out"]["cost_eur"], rel=1e-9)


def test_decoder_seconds_charged_add_up_to_its_busy_time_and_with_idle_to_its_wall_time(accounted):
    (busy_before, idle_before, (sent_before, answered_before)), (busy_after, idle_after, (sent_after, answered_after)) = \
        accounted["clock"]
    charged = sum(e["stage_seconds"]["prefill"] + e["stage_seconds"]["decode"] for e in accounted["events"].values())
    busy, idle = busy_after - busy_before, idle_after - idle_before
    assert charged == pytest.approx(busy, rel=1e-3)
    # The decoder read its clock somewhere inside each scrape's round trip: the time between its two readings lies
    # between the shortest and the longest the test's own clock allows (a millisecond for the clocks' reads).
    shortest, longest = sent_after - answered_before, answered_after - sent_before
    assert shortest - 0.001 <= busy + idle <= longest + 0.001, (busy, idle, shortest, longest)


def test_every_request_leaves_one_complete_trace_in_the_trace_store(accounted, observed: ObservedStack):
    store = TraceStoreClient(observed.trace_store_url)
    for name, sent in accounted["sent"].items():
        def request_span_stored(trace_id=sent["trace_id"]):
            spans = store.trace(trace_id)
            return spans if any("lynx.outcome" in s.attributes for s in spans) else None
        spans = wait_for(request_span_stored, 45, f"the {name} request's trace in Jaeger")
        assert orphans_in_trace(spans) == [], name
        roots = [s for s in spans if not s.parent_span_id]
        assert len(roots) == 1 and roots[0].service == "lynx-gateway", name
        request_span = next(s for s in spans if "lynx.outcome" in s.attributes)
        event = accounted["events"][name]
        assert request_span.attributes["lynx.outcome"] == event["outcome"]
        assert request_span.attributes["lynx.cost.eur"] == pytest.approx(event["cost_eur"], rel=1e-9), name


def test_failures_after_the_status_line_count_as_errors_in_the_red_metrics(accounted):
    text = scrape(accounted["stack"].gateway.url)
    route = {"endpoint": "/v1/chat/completions", "method": "POST"}
    assert metric_value(text, "lynx_request_total", {**route, "status": "499"}) >= 1  # the client hung up
    assert metric_value(text, "lynx_request_total", {**route, "status": "502"}) >= 1  # the decoder failed mid-stream
    assert metric_value(text, "lynx_request_total", {**route, "status": "504"}) >= 1
    assert metric_value(text, "lynx_cost_identity_violations_total") == 0


def test_a_stream_cut_by_gateway_shutdown_is_charged_and_its_decoder_sequence_stopped(faulty: Stack, base_env,
                                                                                     observed: ObservedStack, tmp_path):
    """SIGTERM with a stream open and a 1 s grace: the stream is cut, charged as failed, the decoder told to stop."""
    gateway = start_service("gateway", {
        **base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": observed.trace_store_otlp, "LYNX_GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
        **faulty.upstreams_environment()}, tmp_path / "gateway.log")
    try:
        wait_ready([gateway], 60)
        unread_before = metric_value(scrape(faulty.decoder.url), "lynx_decoder_unread_seconds_total")
        request_id = f"acct-shutdown-{uuid.uuid4().hex[:8]}"
        body = chat_body("Write a very long story about a wolf.", 1000, True, retrieval_top_k=0)
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60,
                          headers={**faulty.headers(), "X-Request-ID": request_id}) as response:
            lines = response.iter_lines()
            for _ in range(6):
                next(lines)
            gateway.process.send_signal(signal.SIGTERM)
            try:
                tail = list(lines)
            except httpx.HTTPError:  # the server may close the connection without a last event
                tail = []
        assert gateway.process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert not any('"finish_reason": "stop"' in line or '"finish_reason": "length"' in line for line in tail)
        events = {e["request_id"]: e for e in [json.loads(line) for line in gateway.log.read_text().splitlines()
                                               if line.startswith("{")] if e.get("event") == "request_failed"}
        event = events[request_id]
        assert event["outcome"] == "failed" and event["cost_eur"] > 0
        assert event["stage_seconds"]["decode"] > 0 and event["completion_tokens"] > 0
        wait_for(lambda: quiet(faulty), 10, "the decoder to drop the cut sequence")
        assert metric_value(scrape(faulty.decoder.url), "lynx_decoder_unread_seconds_total") == unread_before, \
            "the gateway read the decoder's final report itself"
    finally:
        gateway.stop()
