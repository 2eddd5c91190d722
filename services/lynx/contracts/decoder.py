"""Gateway <-> decoder: the generate request, its NDJSON event stream, cancellation.

One ``POST /v1/generate`` answers with newline-delimited JSON events over one connection:
``started`` (the sequence's id and where to cancel it), one ``delta`` per batch of tokens, and
exactly one ``finished`` with the usage and what the sequence consumed. Every sequence the
decoder accepts ends with ``finished``, whatever ends it, so the caller can always charge it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from lynx.contracts.limits import (
    MAX_CONTEXT_TOKENS, MAX_DEADLINE_SECONDS, MAX_STOP_SEQUENCES, MAX_TEMPERATURE, MAX_TENANT_ID_CHARACTERS,
)

FinishReason = Literal["stop", "length", "deadline", "cancelled", "error"]
# The decoder's refusals of new work (503 with Retry-After), which the gateway passes on to the client as they are.
QUEUE_FULL = "queue_full"  # every slot and queue place is taken
QUEUE_WAIT_EXCEEDS_DEADLINE = "queue_wait_exceeds_deadline"  # it would wait for a slot and not finish in time


class GenerateRequest(BaseModel):
    input_ids: list[int] = Field(min_length=1, max_length=MAX_CONTEXT_TOKENS)
    max_tokens: int = Field(default=128, ge=1, le=MAX_CONTEXT_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    deadline_seconds: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_SECONDS, description="Wall-clock budget from arrival; ends with reason "
        "'deadline'. A request that would wait for a slot and not finish within it is refused at once "
        "(queue_wait_exceeds_deadline).")
    seed: int | None = None
    ignore_eos: bool = Field(default=False, description="Generate max_tokens even past end-of-sequence (benchmarks).")
    tenant: str = Field(default="", max_length=MAX_TENANT_ID_CHARACTERS,
                        description="Who pays: named in the decoder's own logs only.")


class StreamStarted(BaseModel):
    type: Literal["started"] = "started"
    sequence_id: str
    cancel_url: str = Field(description="Where to POST to stop this sequence: the instance that holds it.")


class TokenDelta(BaseModel):
    type: Literal["delta"] = "delta"
    ids: list[int]
    text: str
    prefill_seconds: float = Field(description="Prefill seconds attributed to the sequence so far.")
    decode_seconds: float = Field(description="Decode seconds attributed to the sequence so far.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class DecoderTimings(BaseModel):
    queue_seconds: float = Field(description="Waiting for a KV slot (not charged: the hardware served others).")
    prefill_seconds: float = Field(description="Engine seconds attributed to this sequence's prefill.")
    decode_seconds: float = Field(description="This sequence's shares of the decode steps it was in.")
    decode_steps: int
    resident_seconds: float = Field(description="Wall time from arrival in the engine to the end.")
    engine_busy_seconds: float = Field(
        description="The engine's busy seconds (all sequences) while this one was resident: an upper bound "
                    "of prefill + decode measured by the engine's own counter.")


class StreamFinished(BaseModel):
    type: Literal["finished"] = "finished"
    finish_reason: FinishReason
    usage: Usage
    timings: DecoderTimings
    error: str | None = Field(default=None, description="What failed, when finish_reason is 'error'.")


DecoderEvent = Annotated[StreamStarted | TokenDelta | StreamFinished, Field(discriminator="type")]
_EVENTS: TypeAdapter[DecoderEvent] = TypeAdapter(DecoderEvent)


def parse_event(line: str | bytes) -> StreamStarted | TokenDelta | StreamFinished:
    return _EVENTS.validate_json(line)


def encode_events(events: list[StreamStarted | TokenDelta | StreamFinished]) -> bytes:
    return b"".join(event.model_dump_json().encode() + b"\n" for event in events)


class DecoderInfo(BaseModel):
    """``GET /v1/info``: what the decoder serves; the gateway checks prompts against its context before sending."""

    model: str
    max_context: int = Field(description="Prompt + completion tokens one sequence may hold.")
    kv_slots: int
    batching: str


class DecoderLoad(BaseModel):
    """``GET /v1/load``: the sequences this instance holds now, from every caller; a gateway corrects its own count of
    requests in flight with it when it chooses an instance (lynx.gateway.decoders)."""

    sequences: int = Field(ge=0, description="Sequences held: running, prefilling or waiting for a slot.")
    kv_slots: int = Field(ge=1, description="Sequences decoded at once.")


class CancelResponse(BaseModel):
    cancelled: bool = Field(description="False when the sequence had already finished.")
