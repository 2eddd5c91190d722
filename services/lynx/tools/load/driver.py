"""The request driver: chat completions through a gateway at a fixed concurrency, one ``RequestRecord`` per request.

Requests are spread over the tenants' keys round robin, and streamed or not so that any first n of them hold
floor(n x stream_share) streams. Nothing here retries: every request ends in exactly one record, whatever happened
to it, which is what `lynx load` reports on and what the chaos script checks against the services' own counters.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
from pydantic import TypeAdapter, ValidationError

from lynx.contracts.errors import ErrorBody
from lynx.gateway.schemas import ChatCompletion, ChatCompletionChunk, ModelList
from lynx.accounting.tenants import hash_key
from lynx.service.lines import body_lines

# ok: a whole answer; http_error: an error status (or a stream's error event) with an OpenAI-shaped error body;
# malformed: an error status without one, a body that is not a completion, or a stream cut short;
# reset: the connection failed before any response; timeout: no whole answer within LoadSpec.timeout_s.
Outcome = Literal["ok", "http_error", "malformed", "reset", "timeout"]
# The gateway's lynx.telemetry.http.TRACE_ID_HEADER, not imported from there: that module needs the serve extra.
TRACE_ID_HEADER = "x-lynx-trace-id"
DEFAULT_PROMPT = "How do I define a function in Python?"
# A worker whose requests keep failing unserved (no connection, or 5xx: the deployment is down or stopping) waits
# before its next one, twice as long each time up to the cap, instead of spinning on a gateway that is not there.
BACKOFF_FIRST_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0
STREAM_EVENT = TypeAdapter(ChatCompletionChunk | ErrorBody)


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    keys: tuple[str, ...]
    concurrency: int = 4
    duration_s: float | None = None  # no request starts after this many seconds; those under way finish
    requests: int | None = None  # at most this many requests (with duration_s too: whichever ends first)
    max_tokens: int = 16
    stream_share: float = 0.5
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = 120  # per request, from sending it to its last byte

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("LoadSpec needs at least one API key")
        if self.duration_s is None and self.requests is None:
            raise ValueError("LoadSpec needs duration_s, requests or both: the run must end")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, not {self.duration_s}")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be at least 1, not {self.requests}")
        if self.concurrency < 1 or self.max_tokens < 1 or self.timeout_s <= 0:
            raise ValueError("concurrency and max_tokens must be at least 1, timeout_s positive")
        if not 0 <= self.stream_share <= 1:
            raise ValueError(f"stream_share is a fraction between 0 and 1, not {self.stream_share}")


@dataclass(frozen=True)
class RequestRecord:
    started_at: float  # wall clock (Unix seconds) when the request was sent
    tenant: str  # tenant_label of the key it was sent with
    stream: bool
    status: int | None  # the HTTP status; None when no response arrived
    outcome: Outcome
    error_type: str | None  # the error body's code (else its type), or what went wrong (exception class); None if ok
    trace_id: str | None  # the x-lynx-trace-id header
    cost_eur: float | None  # lynx.cost.total: of the body, a stream's final chunk, or an error body when charged
    latency_s: float  # from sending the request to its last byte (or its failure)
    ttft_s: float | None  # to the first content token (streams only: a whole body arrives at once)
    inter_token_s: tuple[float, ...]  # between consecutive content chunks of a stream
    completion_tokens: int | None  # usage.completion_tokens (a stream's usage chunk)
    finish_reason: str | None = None  # the answer's: stop, length or deadline (None without a whole answer)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def finished_at(self) -> float:
        return self.started_at + self.latency_s


def tenant_label(key: str) -> str:
    """A key's name in records and reports: the start of its SHA-256, as the gateway's tenants file stores it."""
    return hash_key(key)[:8]


def is_streamed(index: int, share: float) -> bool:
    """Whether request ``index`` streams: spread evenly, so that any first n requests hold floor(n x share) streams."""
    return math.floor((index + 1) * share) > math.floor(index * share)


@dataclass
class Reading:
    """What one response has shown so far; becomes a RequestRecord once the request is over."""

    status: int | None = None
    trace_id: str | None = None
    outcome: Outcome = "ok"
    error_type: str | None = None
    cost_eur: float | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    token_times: list[float] = field(default_factory=list)  # seconds after sending, of each content chunk

    def fail(self, outcome: Outcome, error_type: str) -> None:
        self.outcome, self.error_type = outcome, error_type

    def error(self, body: ErrorBody) -> None:
        self.fail("http_error", body.error.code or body.error.type)
        if body.lynx is not None and body.lynx.cost is not None:
            self.cost_eur = body.lynx.cost.get("total")

    def error_body(self, content: bytes) -> None:
        try:
            self.error(ErrorBody.model_validate_json(content))
        except ValidationError:
            self.fail("malformed", "invalid_error_body")

    def completion(self, content: bytes) -> None:
        try:
            answer = ChatCompletion.model_validate_json(content)
        except ValidationError:
            self.fail("malformed", "invalid_completion")
            return
        self.cost_eur, self.completion_tokens = answer.lynx.cost.total, answer.usage.completion_tokens
        self.finish_reason = answer.choices[0].finish_reason if answer.choices else None

    def event(self, data: str, at: float) -> bool:
        """One server-sent event's data; False once the stream has nothing more to say (its end, or an error)."""
        if data == "[DONE]":
            if self.cost_eur is None:  # ended without the final chunk that settles the request
                self.fail("malformed", "incomplete_stream")
            return False
        try:
            event = STREAM_EVENT.validate_json(data)
        except ValidationError:
            self.fail("malformed", "invalid_chunk")
            return False
        if isinstance(event, ErrorBody):  # the stream failed after its status line and says so
            self.error(event)
            return False
        if any(choice.delta.content for choice in event.choices):
            self.token_times.append(at)
        self.finish_reason = next((c.finish_reason for c in event.choices if c.finish_reason), self.finish_reason)
        if event.lynx is not None:
            self.cost_eur = event.lynx.cost.total
        if event.usage is not None:
            self.completion_tokens = event.usage.completion_tokens
        return True

    def record(self, started_at: float, tenant: str, stream: bool, latency_s: float) -> RequestRecord:
        times = self.token_times
        return RequestRecord(
            started_at=started_at, tenant=tenant, stream=stream, status=self.status, outcome=self.outcome,
            error_type=self.error_type, trace_id=self.trace_id, cost_eur=self.cost_eur, latency_s=latency_s,
            ttft_s=times[0] if times else None, inter_token_s=tuple(b - a for a, b in itertools.pairwise(times)),
            completion_tokens=self.completion_tokens, finish_reason=self.finish_reason if self.outcome == "ok" else None)


async def read_response(response: httpx.Response, reading: Reading, stream: bool, sent: float) -> None:
    if response.status_code >= 400:
        reading.error_body(await response.aread())
    elif response.status_code != 200:
        reading.fail("malformed", f"unexpected_status_{response.status_code}")
    elif not stream:
        reading.completion(await response.aread())
    else:
        async for line in body_lines(response):
            if line.startswith("data: ") and not reading.event(line.removeprefix("data: "),
                                                                 time.perf_counter() - sent):
                return
        reading.fail("malformed", "incomplete_stream")  # the body ended without [DONE]


async def send(client: httpx.AsyncClient, spec: LoadSpec, model: str, index: int) -> RequestRecord:
    key = spec.keys[index % len(spec.keys)]
    stream = is_streamed(index, spec.stream_share)
    body = {"model": model, "messages": [{"role": "user", "content": spec.prompt}], "max_tokens": spec.max_tokens,
            "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    reading = Reading()
    started_at, sent = time.time(), time.perf_counter()
    try:
        async with asyncio.timeout(spec.timeout_s), client.stream(
                "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as response:
            reading.status, reading.trace_id = response.status_code, response.headers.get(TRACE_ID_HEADER)
            await read_response(response, reading, stream, sent)
    except (TimeoutError, httpx.TimeoutException) as error:
        reading.fail("timeout", type(error).__name__)
    except httpx.RequestError as error:  # after the status line, the answer was cut short: a broken stream
        reading.fail("reset" if reading.status is None else "malformed", type(error).__name__)
    return reading.record(started_at, tenant_label(key), stream, time.perf_counter() - sent)


def unserved(record: RequestRecord) -> bool:
    """Whether the request failed for want of a serving deployment: never connected, or a 5xx."""
    return record.outcome == "reset" or (record.status or 0) >= 500


def backoff_seconds(failures_in_a_row: int) -> float:
    """The wait before the next request after that many unserved ones in a row (0: none)."""
    if failures_in_a_row <= 0:
        return 0.0
    return min(BACKOFF_FIRST_SECONDS * 2 ** (failures_in_a_row - 1), BACKOFF_MAX_SECONDS)


async def served_model(client: httpx.AsyncClient, key: str | None = None) -> str:
    """The model the gateway serves (GET /v1/models), asked with ``key`` or the client's own headers."""
    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"} if key else None)
    if response.status_code != 200:
        raise RuntimeError(f"GET {client.base_url}/v1/models answered {response.status_code}: {response.text}")
    return ModelList.model_validate_json(response.content).data[0].id


async def drive(spec: LoadSpec, on_record: Callable[[RequestRecord], None] | None = None,
                stop: asyncio.Event | None = None) -> list[RequestRecord]:
    """Sends requests from ``spec.concurrency`` workers until its duration or request count is reached, or ``stop``
    is set; requests under way then finish (within timeout_s). Returns the records in the order they were sent."""
    stop = stop or asyncio.Event()
    deadline = None if spec.duration_s is None else time.monotonic() + spec.duration_s
    numbers = itertools.count()
    records: list[RequestRecord] = []

    def next_index() -> int | None:
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return None
        index = next(numbers)
        return index if spec.requests is None or index < spec.requests else None

    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    async with httpx.AsyncClient(base_url=spec.base_url, timeout=spec.timeout_s, limits=limits) as client:
        model = await served_model(client, spec.keys[0])

        async def worker() -> None:
            failures_in_a_row = 0
            while (index := next_index()) is not None:
                record = await send(client, spec, model, index)
                records.append(record)
                if on_record is not None:
                    on_record(record)
                failures_in_a_row = failures_in_a_row + 1 if unserved(record) else 0
                await asyncio.sleep(backoff_seconds(failures_in_a_row))

        await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return sorted(records, key=lambda record: record.started_at)
