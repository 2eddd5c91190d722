"""/v1/retrieve runs embed and search in a bounded pool of worker threads: the probes answer meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lynx.contracts.retriever import RetrieveResponse
from lynx.retriever.corpus import Passage
from lynx.retriever.routes import router
from lynx.retriever.settings import RetrieverSettings
from lynx.service.app import create_service_app

WAIT_SECONDS = 10.0
PASSAGE = Passage(id="tutorial/index.html#0", source="tutorial/index.html", text="The Python Tutorial")


@dataclass
class HeldEmbedder:
    """A fake embedder that holds the first query until ``release`` is set; later queries pass at once."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    threads: list[str] = field(default_factory=list)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(WAIT_SECONDS), "the held query was never released"
        return np.ones((len(texts), 4), np.float32)


class OnePassageIndex:
    def search(self, query: np.ndarray, top_k: int) -> list[tuple[Passage, float]]:
        return [(PASSAGE, 0.5)]


@dataclass
class Retriever:
    client: TestClient
    app: FastAPI
    embedder: HeldEmbedder
    spans: InMemorySpanExporter

    def retrieve(self, query: str = "what is a list?") -> RetrieveResponse:
        response = self.client.post("/v1/retrieve", json={"query": query, "top_k": 1})
        assert response.status_code == 200, response.text
        return RetrieveResponse.model_validate(response.json())


@pytest.fixture
def retriever() -> Iterator[Retriever]:
    """The real routes and service scaffolding, one worker, a fake embedder and index."""
    settings = RetrieverSettings(workers=1)
    embedder = HeldEmbedder()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.embedder = embedder
        app.state.index = OnePassageIndex()
        app.state.workers = CapacityLimiter(settings.workers)
        yield

    app = create_service_app(name="retriever", settings=settings, lifespan=lifespan, router=router)
    spans = InMemorySpanExporter()
    app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    with TestClient(app) as client:
        held = Retriever(client, app, embedder, spans)
        yield held
        embedder.release.set()


def test_the_probes_answer_while_a_query_is_being_embedded(retriever: Retriever):
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(retriever.retrieve)
        assert retriever.embedder.entered.wait(WAIT_SECONDS)
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert retriever.client.get(probe).status_code == 200
        assert not pending.done(), "the probes should have answered while the query was held"
        retriever.embedder.release.set()
        assert pending.result(WAIT_SECONDS).passages[0].id == PASSAGE.id
    assert retriever.embedder.threads[0] != threading.main_thread().name


def test_seconds_leaves_out_the_wait_for_a_free_worker(retriever: Retriever):
    with ThreadPoolExecutor(2) as pool:
        pool.submit(retriever.retrieve, "first")
        assert retriever.embedder.entered.wait(WAIT_SECONDS)
        started = time.perf_counter()
        second = pool.submit(retriever.retrieve, "second")
        deadline = time.monotonic() + WAIT_SECONDS
        while retriever.app.state.workers.statistics().tasks_waiting < 1:  # the second query queues for the worker
            assert time.monotonic() < deadline, "the second query never waited for the worker"
            time.sleep(0.01)
        time.sleep(0.3)
        retriever.embedder.release.set()
        answer = second.result(WAIT_SECONDS)
        waited = time.perf_counter() - started
    assert waited >= 0.3
    assert answer.seconds < 0.1, "the second query was charged for the time the first one held the worker"


def test_the_retrieve_span_is_a_child_of_the_request_span(retriever: Retriever):
    retriever.embedder.release.set()
    retriever.retrieve()
    finished = retriever.spans.get_finished_spans()
    server = next(s for s in finished if s.kind == SpanKind.SERVER)
    retrieve = next(s for s in finished if s.name == "retrieve")
    assert retrieve.parent is not None and retrieve.parent.span_id == server.context.span_id
    assert retrieve.context.trace_id == server.context.trace_id
    assert retrieve.attributes["lynx.retrieve.hits"] == 1
