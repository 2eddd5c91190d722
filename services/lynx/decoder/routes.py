"""POST /v1/generate streams newline-delimited JSON events over one connection (lynx.contracts.decoder)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from opentelemetry import trace

from lynx.contracts.decoder import (
    QUEUE_FULL, QUEUE_WAIT_EXCEEDS_DEADLINE, CancelResponse, DecoderInfo, DecoderLoad, DecoderTimings, GenerateRequest,
    StreamFinished, StreamStarted, TokenDelta, Usage, encode_events,
)
from lynx.contracts.limits import context_error
from lynx.decoder.engine import BatchingEngine, Finish, GenerationRequest, QueueFull, Sequence, WaitExceedsDeadline
from lynx.decoder.sampling import SamplingParams
from lynx.service.errors import CONTEXT_LENGTH_EXCEEDED, LynxError
from lynx.service.streaming import ObservedStream, StreamEnd
from lynx.telemetry.request_id import request_id_var

router = APIRouter(prefix="/v1")
NDJSON = "application/x-ndjson"
# New work; a stopping decoder refuses it (lynx.service.shutdown), while cancellations of its sequences still come in.
GENERATE_PATH = "/v1/generate"


def validate_against_model(body: GenerateRequest, engine: BatchingEngine) -> None:
    vocab = engine.model.vocab_size
    if any(not 0 <= token < vocab for token in body.input_ids):
        raise LynxError(400, f"input_ids must be token ids in [0, {vocab}).", "invalid_token_id", param="input_ids")
    if error := context_error(len(body.input_ids), body.max_tokens, engine.max_context):
        raise LynxError(400, error, CONTEXT_LENGTH_EXCEEDED, param="max_tokens")


def wait_exceeds_deadline_error(refused: WaitExceedsDeadline, engine: BatchingEngine) -> LynxError:
    refusal = refused.refusal
    retry = str(refusal.retry_after_seconds)
    return LynxError(503, f"Every one of the decoder's {engine.slots} slots is taken: the request would wait about "
                     f"{refusal.expected_wait_seconds:.1f} s for one and finish after about "
                     f"{refusal.expected_finish_seconds:.1f} s, past the {refusal.remaining_seconds:.1f} s left of its "
                     f"deadline; retry after {retry} s.", QUEUE_WAIT_EXCEEDS_DEADLINE, "server_overloaded",
                     headers={"Retry-After": retry})


@router.get("/info")
async def info(request: Request) -> DecoderInfo:
    state = request.app.state
    return DecoderInfo(model=state.settings.model_name, max_context=state.engine.max_context,
                       kv_slots=state.engine.slots, batching=state.settings.batching)


@router.get("/load")
async def load(request: Request) -> DecoderLoad:
    engine: BatchingEngine = request.app.state.engine
    return DecoderLoad(sequences=engine.slots_used + engine.queue_depth, kv_slots=engine.slots)


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> ObservedStream:
    state = request.app.state
    engine: BatchingEngine = state.engine
    validate_against_model(body, engine)
    deadline = time.monotonic() + body.deadline_seconds if body.deadline_seconds else None
    try:
        sequence = engine.submit(GenerationRequest(
            prompt_ids=body.input_ids, max_tokens=body.max_tokens,
            sampling=SamplingParams(body.temperature, body.top_p), stop=tuple(body.stop),
            deadline=deadline, seed=body.seed, ignore_eos=body.ignore_eos, tenant=body.tenant,
            request_id=request_id_var.get()))
    except QueueFull:
        retry = str(state.settings.retry_after_seconds)
        raise LynxError(503, f"The decoder's {engine.slots} slots and {engine.queue_capacity} queue places are "
                        f"all taken; retry after {retry} s.", QUEUE_FULL, "server_overloaded",
                        headers={"Retry-After": retry}) from None
    except WaitExceedsDeadline as refused:
        raise wait_exceeds_deadline_error(refused, engine) from None
    started = StreamStarted(sequence_id=sequence.id,
                            cancel_url=f"{state.settings.advertised_url()}/v1/generate/{sequence.id}/cancel")
    progress = {"finished": False}

    def on_end(_: StreamEnd) -> None:
        if not progress["finished"]:  # the reader is gone: stop the sequence and let the decoder log its cost
            engine.detach(sequence)

    return ObservedStream(stream_events(sequence, started, state.tracer, progress), media_type=NDJSON, on_end=on_end)


@router.post("/generate/{sequence_id}/cancel")
async def cancel(sequence_id: str, request: Request) -> CancelResponse:
    """Stop a sequence at the next step; its stream still ends with a ``finished`` event."""
    return CancelResponse(cancelled=request.app.state.engine.cancel_by_id(sequence_id))


async def stream_events(sequence: Sequence, started: StreamStarted, tracer: trace.Tracer,
                        progress: dict[str, bool]) -> AsyncIterator[bytes]:
    """Events that piled up while the client was being written to go out in one write."""
    yield encode_events([started])
    while not progress["finished"]:
        events = [await sequence.events.get()]
        while not sequence.events.empty():
            events.append(sequence.events.get_nowait())
        lines: list[TokenDelta | StreamFinished] = []
        for event in events:
            if isinstance(event, Finish):
                progress["finished"] = True
                record_stage_spans(tracer, event)
                lines.append(finished_event(event))
            else:
                lines.append(TokenDelta(ids=event.token_ids, text=event.text, prefill_seconds=event.prefill_seconds,
                                        decode_seconds=event.decode_seconds))
        yield encode_events(lines)


def finished_event(event: Finish) -> StreamFinished:
    t = event.timings
    return StreamFinished(
        finish_reason=event.reason,
        usage=Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens),
        timings=DecoderTimings(queue_seconds=t.queue_seconds, prefill_seconds=t.prefill_seconds,
                               decode_seconds=t.decode_seconds, decode_steps=t.decode_steps,
                               resident_seconds=t.resident_seconds, engine_busy_seconds=t.engine_busy_seconds),
        error=event.error,
    )


def record_stage_spans(tracer: trace.Tracer, event: Finish) -> None:
    """queue, prefill and decode spans, placed at the times the engine measured (queue only, if never admitted)."""
    t = event.timings
    common = {"lynx.finish_reason": event.reason}
    if not t.admitted_ns:
        stages = [("queue", t.submitted_ns, t.finished_ns, common)]
    else:
        stages = [
            ("queue", t.submitted_ns, t.admitted_ns, common),
            ("prefill", t.admitted_ns, t.first_token_ns,
             {**common, "gen_ai.usage.input_tokens": event.prompt_tokens,
              "lynx.attributed_seconds": t.prefill_seconds}),
            ("decode", t.first_token_ns, t.finished_ns,
             {**common, "gen_ai.usage.output_tokens": event.completion_tokens,
              "lynx.attributed_seconds": t.decode_seconds, "lynx.decode.steps": t.decode_steps,
              "gen_ai.response.finish_reasons": [event.reason]}),
        ]
    for name, start, end, attributes in stages:
        span = tracer.start_span(name, start_time=start, attributes=attributes)
        if event.reason == "error":
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.error or "engine failure"))
        span.end(end_time=max(end, start))
