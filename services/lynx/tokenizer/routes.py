"""Encode, chat template, detokenize: the CPU work runs in worker threads, so the probes answer meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable

from anyio import to_thread
from fastapi import APIRouter, Request
from opentelemetry.trace import Span

from lynx.contracts.tokenizer import (
    ChatTemplateRequest, DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
)
from lynx.tokenizer.text import ModelTokenizer

router = APIRouter(prefix="/v1")


def tokenizer_of(request: Request) -> ModelTokenizer:
    return request.app.state.tokenizer


async def tokenize_in_worker(request: Request, encode: Callable[[Span], list[int]]) -> TokenizeResponse:
    """Run ``encode`` in a worker thread, inside this request's `tokenize` span, timed there.

    ``seconds`` is what this request is charged for, so it starts once a worker has taken the request:
    time spent waiting for a free worker is other requests' processing, already charged to them. The wait
    still shows in the gateway's wall time for the call, and in the trace as the gap before the span.
    """
    tracer = request.app.state.tracer

    def timed() -> TokenizeResponse:
        started = time.perf_counter()
        # anyio runs this in a copy of the request's context: the span's parent is the server span.
        with tracer.start_as_current_span("tokenize") as span:
            ids = encode(span)
            span.set_attribute("lynx.tokens", len(ids))
        return TokenizeResponse(ids=ids, count=len(ids), seconds=time.perf_counter() - started)

    return await to_thread.run_sync(timed, limiter=request.app.state.workers)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    """A completion prompt: all of it is the client's text, so all of it is plain text."""
    tokenizer = tokenizer_of(request)
    return await tokenize_in_worker(request, lambda _: tokenizer.encode_text(body.text))


@router.post("/chat")
async def chat_template(body: ChatTemplateRequest, request: Request) -> TokenizeResponse:
    """Render the chat template and tokenize the result in one hop; only the template writes markers."""
    tokenizer = tokenizer_of(request)

    def encode(span: Span) -> list[int]:
        span.set_attribute("lynx.chat.messages", len(body.messages))
        return tokenizer.encode_chat(body.messages, body.add_generation_prompt)

    return await tokenize_in_worker(request, encode)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    text = await to_thread.run_sync(tokenizer_of(request).decode, body.ids, limiter=request.app.state.workers)
    return DetokenizeResponse(text=text)
