"""Retrieval: embed and search run in worker threads, so the probes answer while queries are being served."""

from __future__ import annotations

import time

from anyio import to_thread
from fastapi import APIRouter, Request

from lynx.contracts.retriever import RetrievedPassage, RetrieveRequest, RetrieveResponse

router = APIRouter(prefix="/v1")


@router.post("/retrieve")
async def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
    state = request.app.state
    top_k = min(body.top_k, state.settings.max_top_k)

    def embed_and_search() -> RetrieveResponse:
        # Timed in the worker: ``seconds`` is what this request is charged for, so time spent waiting for a
        # free worker (other requests' processing, already charged to them) is not counted again. The wait
        # still shows in the gateway's wall time for the call, and in the trace as the gap before the span.
        started = time.perf_counter()
        # anyio runs this in a copy of the request's context: the span's parent is the server span.
        with state.tracer.start_as_current_span("retrieve") as span:
            query = state.embedder.embed([body.query])[0]
            hits = state.index.search(query, top_k)
            span.set_attribute("lynx.retrieve.top_k", top_k)
            span.set_attribute("lynx.retrieve.hits", len(hits))
        passages = [RetrievedPassage(id=p.id, source=p.source, text=p.text, score=s) for p, s in hits]
        return RetrieveResponse(passages=passages, seconds=time.perf_counter() - started)

    return await to_thread.run_sync(embed_and_search, limiter=state.workers)
