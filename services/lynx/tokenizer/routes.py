"""Encode, chat template, detokenize: the CPU work runs in worker threads, so the probes answer meanwhile."""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from fastapi import APIRouter, Request
from opentelemetry.trace import Span

from lynx.contracts.tokenizer import (
    ChatTemplateRequest, DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
)
from lynx.tokenization.text import ModelTokenizer
from lynx.service.workers import timed_span

router = APIRouter(prefix="/v1")


def tokenizer_of(request: Request) -> ModelTokenizer:
    return request.app.state.tokenizer


async def tokenize_in_worker(request: Request, encode: Callable[[Span], list[int]]) -> TokenizeResponse:
    """Run ``encode`` in a worker thread, inside this request's `tokenize` span (lynx.service.workers)."""
    def counted(span: Span) -> list[int]:
        ids = encode(span)
        span.set_attribute("lynx.tokens", len(ids))
        return ids

    ids, seconds = await timed_span(request, "tokenize", counted)
    return TokenizeResponse(ids=ids, count=len(ids), seconds=seconds)


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
