from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

router = APIRouter(prefix="/v1")


class RetrieveRequest(BaseModel):
    query: str = Field(min_length=1, max_length=20_000)
    top_k: int = Field(default=3, ge=1, le=100)


class RetrievedPassage(BaseModel):
    id: str
    source: str
    text: str
    score: float


class RetrieveResponse(BaseModel):
    passages: list[RetrievedPassage]
    seconds: float = Field(description="Processing time spent on this request (for cost attribution).")


@router.post("/retrieve")
async def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
    state = request.app.state
    top_k = min(body.top_k, state.settings.max_top_k)
    started = time.perf_counter()
    with state.tracer.start_as_current_span("retrieve") as span:
        query = state.embedder.embed([body.query])[0]
        hits = state.index.search(query, top_k)
        span.set_attribute("lynx.retrieve.top_k", top_k)
        span.set_attribute("lynx.retrieve.hits", len(hits))
    passages = [RetrievedPassage(id=p.id, source=p.source, text=p.text, score=s) for p, s in hits]
    return RetrieveResponse(passages=passages, seconds=time.perf_counter() - started)
