"""The four services end to end: answers, usage, cost, one trace, metrics."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from .conftest import MODEL_NAME, Stack, metric_value, wait_for

CORE_METRICS = {
    "gateway": ["lynx_request_total", "lynx_request_duration_seconds_bucket", "lynx_tokens_total",
                "lynx_time_to_first_token_seconds_bucket"],
    "decoder": ["lynx_kv_cache_slots_used", "lynx_queue_depth", "lynx_request_total"],
}


def chat(stack: Stack, content: str, **fields) -> httpx.Response:
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": content}], **fields}
    return httpx.post(f"{stack.gateway.url}/v1/chat/completions", json=body, headers=stack.headers(), timeout=60)


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: "):]))
    return events


def wait_for_trace(stack: Stack, trace_id: str, services: set[str], timeout: float = 10.0):
    """The trace's spans once ``services`` have all exported theirs."""
    def spans_of_all():
        spans = stack.sink.trace(trace_id)
        return spans if {s.service for s in spans} >= services else None

    return wait_for(spans_of_all, timeout, f"spans of {sorted(services)} in trace {trace_id}", interval=0.2,
                    explain=lambda: f"services seen: {sorted({s.service for s in stack.sink.trace(trace_id)})}")


def test_gateway_is_ready_only_with_all_services(stack: Stack):
    assert httpx.get(f"{stack.gateway.url}/readyz").json() == {"ready": True}


def test_models_are_listed(stack: Stack):
    models = httpx.get(f"{stack.gateway.url}/v1/models", headers=stack.headers()).json()
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]


def test_non_streaming_chat_answers_and_accounts_for_its_cost(stack: Stack):
    response = chat(stack, "What is the capital of France?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "paris" in body["choices"][0]["message"]["content"].lower()
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    cost = body["lynx"]["cost"]
    assert set(cost["stages"]) == {"tokenize", "retrieve", "prefill", "decode", "other"}
    assert cost["total"] > 0
    assert sum(cost["stages"].values()) == pytest.approx(cost["total"], rel=1e-9)
    assert body["lynx"]["cost_identity_ok"] is True
    assert float(response.headers["x-lynx-cost-eur"]) == pytest.approx(cost["total"], rel=1e-6)
    assert response.headers["x-lynx-trace-id"] == body["lynx"]["trace_id"]


def test_one_trace_spans_all_four_services_with_stage_spans(stack: Stack):
    response = chat(stack, "How do I define a function in Python?")
    trace_id = response.json()["lynx"]["trace_id"]
    spans = wait_for_trace(stack, trace_id, {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"})
    by_service = {s.service for s in spans}
    assert by_service == {"lynx-gateway", "lynx-tokenizer", "lynx-retriever", "lynx-decoder"}
    names = {(s.service, s.name) for s in spans}
    for expected in [("lynx-tokenizer", "tokenize"), ("lynx-retriever", "retrieve"), ("lynx-decoder", "queue"),
                     ("lynx-decoder", "prefill"), ("lynx-decoder", "decode")]:
        assert expected in names
    span_ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1 and roots[0].service == "lynx-gateway"
    assert all(s.parent_span_id in span_ids for s in spans if s.parent_span_id), "orphan span in the trace"
    request_span = next(s for s in spans if s.name == f"chat {MODEL_NAME}")
    assert request_span.attributes["lynx.cost.eur"] == pytest.approx(response.json()["lynx"]["cost"]["total"])
    assert request_span.attributes["gen_ai.usage.output_tokens"] == response.json()["usage"]["completion_tokens"]
    assert "lynx.cost.stage.decode.eur" in request_span.attributes


def test_a_request_with_a_traceparent_joins_that_trace(stack: Stack):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = httpx.post(f"{stack.gateway.url}/v1/completions", headers={
        **stack.headers(), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        json={"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["x-lynx-trace-id"] == trace_id
    spans = wait_for_trace(stack, trace_id, {"lynx-gateway", "lynx-tokenizer", "lynx-decoder"})
    assert {"lynx-gateway", "lynx-tokenizer", "lynx-decoder"} <= {s.service for s in spans}


def test_streaming_chat_streams_text_then_usage_and_cost(stack: Stack):
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 24, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, headers=stack.headers(),
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert "paris" in content.lower()
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])
    assert finish["choices"][0]["finish_reason"] in {"stop", "length"}
    cost = finish["lynx"]["cost"]
    assert sum(cost["stages"].values()) == pytest.approx(cost["total"], rel=1e-9)
    assert events[-1]["usage"]["completion_tokens"] > 0 and events[-1]["choices"] == []


def test_the_same_prompt_streams_the_same_text_as_it_answers(stack: Stack):
    question = "Name three primary colours."
    answer = chat(stack, question).json()["choices"][0]["message"]["content"]
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 24, "stream": True,
            "messages": [{"role": "user", "content": question}]}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, headers=stack.headers(),
                      timeout=60) as response:
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in sse_events(response) if e["choices"])
    assert streamed == answer


def test_text_completion_and_stop_sequence(stack: Stack):
    body = {"model": MODEL_NAME, "prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": [" 7"]}
    response = httpx.post(f"{stack.gateway.url}/v1/completions", json=body, headers=stack.headers(), timeout=60)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert " 7" not in choice["text"] and "5" in choice["text"]


def test_all_core_metrics_are_exported_with_route_templates(stack: Stack):
    chat(stack, "Hello")
    for service, names in CORE_METRICS.items():
        text = httpx.get(f"{getattr(stack, service).url}/metrics").text
        for name in names:
            metric_value(text, name)
    gateway = httpx.get(f"{stack.gateway.url}/metrics").text
    assert metric_value(gateway, "lynx_request_total",
                        {"endpoint": "/v1/chat/completions", "method": "POST", "status": "200"}) >= 1
    assert metric_value(gateway, "lynx_tokens_total", {"kind": "completion", "model_name": MODEL_NAME}) > 0
    assert metric_value(gateway, "lynx_cost_eur_per_request_count") >= 1
    assert metric_value(gateway, "lynx_cost_identity_violations_total") == 0
    assert "lynx_kv_cache_slots_used" not in gateway, "decoder gauges must not appear on the gateway"


def test_exemplars_carry_trace_ids_in_openmetrics(stack: Stack):
    trace_id = chat(stack, "Hi there").json()["lynx"]["trace_id"]
    text = httpx.get(f"{stack.gateway.url}/metrics",
                     headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    assert f'trace_id="{trace_id}"' in text


def test_decode_costs_add_up_to_the_decoders_busy_time(stack: Stack):
    """Four requests share decode steps; their attributed decode seconds must sum to the busy time."""
    def busy() -> float:
        return metric_value(httpx.get(f"{stack.decoder.url}/metrics").text, "lynx_decoder_busy_seconds_total",
                            {"phase": "decode"})

    async def run_concurrently() -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as client:
            replies = await asyncio.gather(*(client.post(
                f"{stack.gateway.url}/v1/chat/completions", headers=stack.headers(),
                json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 16 + 8 * i, "retrieval_top_k": 0,
                      "messages": [{"role": "user", "content": f"Count to {i + 3}."}]}) for i in range(4)))
        return [r.json() for r in replies]

    before = busy()
    bodies = asyncio.run(run_concurrently())
    attributed = sum(b["lynx"]["timings"]["decode_seconds"] for b in bodies)
    assert attributed == pytest.approx(busy() - before, rel=1e-6)
    # Shared steps: each request is charged less than the wall time it spent decoding.
    assert max(b["lynx"]["timings"]["decode_steps"] for b in bodies) > 1


def test_the_request_id_travels_to_every_service(stack: Stack):
    request_id = f"rid-{time.time_ns()}"
    response = httpx.post(f"{stack.gateway.url}/v1/chat/completions", headers={**stack.headers(), "X-Request-ID": request_id},
                          json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 4,
                                "messages": [{"role": "user", "content": "How do I open a file?"}]}, timeout=60)
    assert response.status_code == 200 and response.headers["x-request-id"] == request_id
    assert response.json()["lynx"]["request_id"] == request_id

    def logged_by(service) -> set[str]:
        lines = [json.loads(line) for line in service.log.read_text().splitlines() if line.startswith("{")]
        return {line["event"] for line in lines if line.get("request_id") == request_id}
    # A service logs its request line when its response has gone out, which can be a moment after the gateway's.
    for service in stack.processes():
        wait_for(lambda service=service: "request" in logged_by(service), 10, f"{service.name} to log {request_id}",
                 explain=lambda service=service: f"its lines of that request: {logged_by(service)}")
    assert "request_finished" in logged_by(stack.gateway)


def test_readiness_probes_make_no_traces(stack: Stack):
    """The gateway's /readyz asks the three services theirs; none of that may become a span."""
    assert chat(stack, "Hi", max_tokens=2).status_code == 200  # instrumentation demonstrably on
    for _ in range(3):
        assert httpx.get(f"{stack.gateway.url}/readyz").status_code == 200
    time.sleep(1.0)  # more than the exporters' 200 ms schedule delay

    def url_of(span) -> str:
        return " ".join(str(span.attributes.get(k, "")) for k in ("http.url", "url.full", "http.target", "url.path"))
    assert any("/v1/" in url_of(s) for s in stack.sink.spans), "the sink saw no HTTP spans at all"
    assert [s for s in stack.sink.spans if "/readyz" in url_of(s)] == []
