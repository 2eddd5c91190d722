"""The error body every lynx service answers with (OpenAI's shape, plus lynx's correlation ids)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorCorrelation(BaseModel):
    trace_id: str = ""
    request_id: str = ""
    cost: dict | None = None  # lynx.cost of a request that was charged before it failed


class ErrorBody(BaseModel):
    error: ErrorDetail
    lynx: ErrorCorrelation | None = None
