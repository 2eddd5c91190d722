"""Retrieval: embed and search run in worker threads, so the probes answer while queries are being served."""

from __future__ import annotations

from fastapi import APIRouter, Request
from opentelemetry.trace import Span

from lynx.contracts.retriever import RetrievedPassage, RetrieveRequest, RetrieveResponse
from lynx.service.workers import timed_span

router = APIRouter(prefix="/v1")


@router.post("/retrieve")
async def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
    state = request.app.state
    top_k = min(body.top_k, state.settings.max_top_k)

    def embed_and_search(span: Span) -> list[RetrievedPassage]:
        query = state.embedder.embed([body.query])[0]
        hits = state.index.search(query, top_k)
        span.set_attribute("lynx.retrieve.top_k", top_k)
        span.set_attribute("lynx.retrieve.hits", len(hits))
        return [RetrievedPassage(id=p.id, source=p.source, text=p.text, score=s) for p, s in hits]

    passages, seconds = await timed_span(request, "retrieve", embed_and_search)
    return RetrieveResponse(passages=passages, seconds=seconds)
