"""POST /v1/generate streams newline-delimited JSON over one connection: token deltas, then a summary."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from pydantic import BaseModel, Field

from lynx.decoder.engine import BatchingEngine, Finish, GenerationRequest, QueueFull, Sequence
from lynx.decoder.sampling import SamplingParams
from lynx.errors import LynxError

router = APIRouter(prefix="/v1")
NDJSON = "application/x-ndjson"


class GenerateRequest(BaseModel):
    input_ids: list[int] = Field(min_length=1, max_length=8192)
    max_tokens: int = Field(default=128, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    deadline_seconds: float | None = Field(default=None, gt=0, le=3600,
                                           description="Wall-clock budget from arrival; ends with reason 'deadline'.")
    seed: int | None = None
    ignore_eos: bool = Field(default=False, description="Generate max_tokens even past end-of-sequence (benchmarks).")


def validate_against_model(body: GenerateRequest, engine: BatchingEngine) -> None:
    vocab = engine.model.vocab_size
    if any(not 0 <= token < vocab for token in body.input_ids):
        raise LynxError(400, f"input_ids must be token ids in [0, {vocab}).", "invalid_token_id", param="input_ids")
    needed = len(body.input_ids) + body.max_tokens
    if needed > engine.max_context:
        raise LynxError(400, f"The prompt has {len(body.input_ids)} tokens and max_tokens is {body.max_tokens}: "
                        f"{needed} exceeds the context of {engine.max_context} tokens. Shorten the prompt or "
                        "lower max_tokens.", "context_length_exceeded", param="max_tokens")


@router.get("/info")
async def info(request: Request) -> dict:
    state = request.app.state
    return {"model": state.settings.model_name, "max_context": state.engine.max_context,
            "kv_slots": state.engine.slots, "batching": state.settings.batching}


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> StreamingResponse:
    state = request.app.state
    engine: BatchingEngine = state.engine
    validate_against_model(body, engine)
    deadline = time.monotonic() + body.deadline_seconds if body.deadline_seconds else None
    try:
        sequence = engine.submit(GenerationRequest(
            prompt_ids=body.input_ids, max_tokens=body.max_tokens,
            sampling=SamplingParams(body.temperature, body.top_p), stop=tuple(body.stop),
            deadline=deadline, seed=body.seed, ignore_eos=body.ignore_eos))
    except QueueFull:
        retry = str(state.settings.retry_after_seconds)
        raise LynxError(503, f"The decoder's {engine.slots} slots and {engine.queue_capacity} queue places are "
                        f"all taken; retry after {retry} s.", "queue_full", "server_overloaded",
                        headers={"Retry-After": retry}) from None
    return StreamingResponse(stream_events(sequence, engine, state.tracer), media_type=NDJSON)


async def stream_events(sequence: Sequence, engine: BatchingEngine, tracer: trace.Tracer) -> AsyncIterator[bytes]:
    """NDJSON lines; events that piled up while the client was being written to go out in one write."""
    finished = False
    try:
        while not finished:
            events = [await sequence.events.get()]
            while not sequence.events.empty():
                events.append(sequence.events.get_nowait())
            lines = []
            for event in events:
                if isinstance(event, Finish):
                    finished = True
                    record_stage_spans(tracer, event)
                    lines.append(finish_line(event))
                else:
                    lines.append({"ids": event.token_ids, "text": event.text})
            yield "".join(json.dumps(line) + "\n" for line in lines).encode()
    finally:
        if not finished:  # the client went away: give the slot back now
            engine.cancel(sequence)


def finish_line(event: Finish) -> dict:
    t = event.timings
    return {
        "finish_reason": event.reason,
        "usage": {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens},
        "timings": {"queue_seconds": t.queue_seconds, "prefill_seconds": t.prefill_seconds,
                    "decode_seconds": t.decode_seconds, "decode_steps": t.decode_steps},
    }


def record_stage_spans(tracer: trace.Tracer, event: Finish) -> None:
    """queue, prefill and decode spans, placed at the times the engine measured."""
    t = event.timings
    stages = (
        ("queue", t.submitted_ns, t.admitted_ns, {}),
        ("prefill", t.admitted_ns, t.first_token_ns,
         {"gen_ai.usage.input_tokens": event.prompt_tokens, "lynx.attributed_seconds": t.prefill_seconds}),
        ("decode", t.first_token_ns, t.finished_ns,
         {"gen_ai.usage.output_tokens": event.completion_tokens, "lynx.attributed_seconds": t.decode_seconds,
          "lynx.decode.steps": t.decode_steps, "gen_ai.response.finish_reasons": [event.reason]}),
    )
    for name, start, end, attributes in stages:
        span = tracer.start_span(name, start_time=start, attributes=attributes)
        span.end(end_time=max(end, start))
