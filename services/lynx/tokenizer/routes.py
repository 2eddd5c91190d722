from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lynx.tokenizer.text import ModelTokenizer

router = APIRouter(prefix="/v1")


class TokenizeRequest(BaseModel):
    text: str = Field(max_length=400_000)


class ChatMessage(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str = Field(max_length=400_000)


class ChatTemplateRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    add_generation_prompt: bool = True


class DetokenizeRequest(BaseModel):
    ids: list[int] = Field(max_length=100_000)


class TokenizeResponse(BaseModel):
    ids: list[int]
    count: int
    seconds: float = Field(description="Processing time spent on this request (for cost attribution).")


def tokenizer_of(request: Request) -> ModelTokenizer:
    return request.app.state.tokenizer


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    started = time.perf_counter()
    with request.app.state.tracer.start_as_current_span("tokenize") as span:
        ids = tokenizer_of(request).encode(body.text)
        span.set_attribute("lynx.tokens", len(ids))
    return TokenizeResponse(ids=ids, count=len(ids), seconds=time.perf_counter() - started)


@router.post("/chat")
async def chat_template(body: ChatTemplateRequest, request: Request) -> TokenizeResponse:
    """Render the chat template and tokenize the result in one hop."""
    started = time.perf_counter()
    with request.app.state.tracer.start_as_current_span("tokenize") as span:
        tokenizer = tokenizer_of(request)
        prompt = tokenizer.render_chat([m.model_dump() for m in body.messages], body.add_generation_prompt)
        ids = tokenizer.encode(prompt)
        span.set_attribute("lynx.tokens", len(ids))
        span.set_attribute("lynx.chat.messages", len(body.messages))
    return TokenizeResponse(ids=ids, count=len(ids), seconds=time.perf_counter() - started)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict:
    return {"text": tokenizer_of(request).decode(body.ids)}
