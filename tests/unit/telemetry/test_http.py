"""The middleware counts the requests whose server span the sampler kept, against the spans the provider exported."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from lynx.service.app import create_service_app
from lynx.service.settings import ServiceSettings

ROUTE = "/v1/sampling-test"
REQUESTS = 60


def traced_count() -> float:
    return REGISTRY.get_sample_value("lynx_traced_requests_total", {"endpoint": ROUTE}) or 0.0


def served_count() -> float:
    return REGISTRY.get_sample_value("lynx_request_total", {"endpoint": ROUTE, "method": "GET", "status": "200"}) or 0.0


@pytest.fixture
def sampled_app(monkeypatch, request) -> Iterator[tuple[FastAPI, InMemorySpanExporter]]:
    """An app whose provider runs the sampler ``request.param`` (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) and
    hands every span it ends to an in-memory exporter: the spans a trace store would have received."""
    sampler, argument = request.param
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    router = APIRouter()

    @router.get(ROUTE)
    async def answer() -> dict:
        return {"ok": True}

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_service_app(name="sampling-test", settings=ServiceSettings(port=8098), lifespan=lifespan,
                             router=router)
    exported = InMemorySpanExporter()
    app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exported))
    yield app, exported


def exported_server_traces(exported: InMemorySpanExporter) -> set[int]:
    return {span.context.trace_id for span in exported.get_finished_spans()
            if span.attributes.get("http.route") == ROUTE and span.parent is None}


@pytest.mark.parametrize("sampled_app", [("traceidratio", "0.5")], indirect=True)
def test_requests_traced_are_those_whose_spans_reach_the_exporter(sampled_app):
    app, exported = sampled_app
    traced_before, served_before = traced_count(), served_count()
    with TestClient(app) as client:
        for _ in range(REQUESTS):
            assert client.get(ROUTE).status_code == 200
    traced, served = traced_count() - traced_before, served_count() - served_before
    assert served == REQUESTS
    assert traced == len(exported_server_traces(exported))
    # at 0.5, all or none of 60 independent trace ids kept has a chance of 2 in 10^18
    assert 0 < traced < REQUESTS


@pytest.mark.parametrize(("sampled_app", "kept"), [(("always_on", ""), 5), (("always_off", ""), 0)],
                         indirect=["sampled_app"])
def test_every_request_or_none_is_traced_as_the_sampler_says(sampled_app, kept):
    app, exported = sampled_app
    traced_before = traced_count()
    with TestClient(app) as client:
        responses = [client.get(ROUTE) for _ in range(5)]
        client.get("/healthz")  # a probe: never traced, never counted as untraced either
    traced = traced_count() - traced_before
    assert traced == len(exported_server_traces(exported)) == kept
    assert all(r.headers["x-lynx-trace-id"] for r in responses)  # unsampled requests still name their trace
    assert REGISTRY.get_sample_value("lynx_traced_requests_total", {"endpoint": "/healthz"}) is None


@pytest.mark.parametrize("sampled_app", [("parentbased_traceidratio", "0.25")], indirect=True)
def test_the_sampler_the_app_runs_is_exported_with_its_rate(sampled_app):
    assert REGISTRY.get_sample_value("lynx_trace_sampler_ratio", {"sampler": "parentbased_traceidratio"}) == 0.25
    assert [s.labels for m in REGISTRY.collect() if m.name == "lynx_trace_sampler_ratio" for s in m.samples] == [
        {"sampler": "parentbased_traceidratio"}]
