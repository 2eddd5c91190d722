"""Gateway <-> retriever."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lynx.contracts.limits import MAX_QUERY_CHARACTERS


class RetrieveRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARACTERS)
    top_k: int = Field(default=3, ge=1, le=100)


class RetrievedPassage(BaseModel):
    id: str
    source: str
    text: str
    score: float


class RetrieveResponse(BaseModel):
    passages: list[RetrievedPassage]
    seconds: float = Field(description="Processing time spent on this request (for cost attribution).")
