"""One request's path: retrieve -> chat template + tokenize -> reserve -> decode (streamed) -> one ledger entry.

``Pipeline.start`` does everything that can still fail with a clean HTTP status (context too
long, queue full, a deadline that runs out before the first token) before any byte of the
response is sent, and returns a ``Generation`` once the first token is ready. The decoder's
stream is read by a task of its own that the client cannot cancel: whether the client reads to
the end, leaves, or the gateway shuts down, that task reads the decoder's final report (after
asking the decoder to stop, if nobody is listening any more) and makes the request's one ledger
entry before anything that awaits. docs/COSTS.md says why the entry is made here. Once the
prompt is tokenized the request reserves its worst-case cost against its tenant's budget
(lynx.gateway.budgets); the ledger entry settles that reservation, on every path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import ValidationError

from lynx.accounting.clock import StageClock
from lynx.accounting.ledger import Charge, Ledger, Settlement
from lynx.accounting.pricing import NO_CALL, DecoderUse, RemoteCall, RequestTimes, SoloDecoder
from lynx.contracts.decoder import (
    DecoderInfo, GenerateRequest, StreamFinished, StreamStarted, TokenDelta, parse_event,
)
from lynx.contracts.limits import MAX_CONTEXT_TOKENS, MAX_PROMPT_CHARACTERS, MAX_QUERY_CHARACTERS, context_error
from lynx.contracts.retriever import RetrievedPassage, RetrieveRequest, RetrieveResponse
from lynx.contracts.tokenizer import ChatMessage, ChatTemplateRequest, TokenizeRequest, TokenizeResponse
from lynx.service.errors import CONTEXT_LENGTH_EXCEEDED, LynxError
from lynx.gateway.budgets import Hold, affordable_estimate
from lynx.gateway.decoder_pool import DecoderPool
from lynx.gateway.settings import GatewaySettings
from lynx.accounting.tenants import Tenant
from lynx.gateway.upstream import (
    Upstreams, get_json, instance_broken, instance_stopping, post_json, unreachable, upstream_failure,
)
from lynx.service.lines import body_lines
from lynx.telemetry.metrics import generation_metrics
from lynx.telemetry.request_id import request_id_var
from lynx.telemetry.tracing import trace_ids

log = logging.getLogger("lynx.gateway")
CONTEXT_INSTRUCTION = (
    "Answer the user's question. The passages below may help; use them only if they are relevant.\n\n")
# How long an abandoned stream may take to bring the decoder's final report before the gateway
# charges the last figures the decoder sent (the decoder then logs the rest as unread).
CANCEL_GRACE_SECONDS = 5.0
END = object()
DEADLINE_EXCEEDED = "deadline_exceeded"


@dataclass(frozen=True)
class Job:
    """A validated request, in the gateway's terms."""

    tenant: Tenant
    operation: str  # "chat" or "text_completion" (OpenTelemetry GenAI operation names)
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    messages: list[ChatMessage] = field(default_factory=list)
    prompt: str = ""
    retrieval_top_k: int = 0
    max_cost_eur: float | None = None  # the request's own cost ceiling (lynx_max_cost_eur)
    clock: StageClock = field(default_factory=StageClock)


@dataclass(frozen=True)
class DecoderRoute:
    """A decoder configuration the gateway can send a request to: the model it serves and the rates it is charged at."""

    model: str
    decoders: DecoderPool
    ledger: Ledger

    def __post_init__(self) -> None:
        # Every model the gateway routes to counts its requests from 0: the per-model error alert reads them.
        self.ledger.serves(self.model)


def with_passages(messages: list[ChatMessage], passages: list[RetrievedPassage]) -> list[ChatMessage]:
    """Put the retrieved passages into the system message (creating one if needed).

    Passages that would take the prompt past what the tokenizer accepts are left out: such a prompt is far past any
    context anyway, and is refused for that once counted."""
    room = MAX_PROMPT_CHARACTERS - sum(len(m.content) for m in messages) - len(CONTEXT_INSTRUCTION) - 2
    texts = []
    for passage in passages:
        text = f"[{passage.source}] {passage.text}"
        room -= len(text) + 2
        if room < 0:
            break
        texts.append(text)
    if not texts:
        return messages
    context = CONTEXT_INSTRUCTION + "\n\n".join(texts)
    if messages and messages[0].role == "system":
        return [ChatMessage(role="system", content=messages[0].content + "\n\n" + context), *messages[1:]]
    return [ChatMessage(role="system", content=context), *messages]


def retrieval_query(messages: list[ChatMessage]) -> str:
    """The last user message. The embedder reads a query's first 256 tokens only: a longer one is cut to what the
    retriever accepts, which retrieves the same."""
    return next((m.content for m in reversed(messages) if m.role == "user"), "")[:MAX_QUERY_CHARACTERS]


def outcome_of(abandoned: str | None, failure: LynxError | None, finished: StreamFinished | None) -> str:
    """The ledger's outcome: completed, client_closed, failed or deadline."""
    if abandoned:
        return abandoned
    if failure is not None or finished is None:
        return "failed"
    return {"deadline": "deadline", "error": "failed", "cancelled": "failed"}.get(finished.finish_reason, "completed")


class RequestAccount:
    """The request span and the request's one ledger entry, made exactly once, whatever path gets there first.

    The entry settles the request's budget hold: its reservation is released and its charge counted."""

    def __init__(self, ledger: Ledger, model: str, job: Job, span: Span, hold: Hold) -> None:
        self.ledger = ledger
        self.model = model
        self.job = job
        self.span = span
        self.hold = hold
        self.trace_id, _ = trace_ids(span)
        self.request_id = request_id_var.get()
        self.tokenize = NO_CALL
        self.retrieve = NO_CALL
        self.prompt_tokens = 0
        self.settlement: Settlement | None = None
        self.times: RequestTimes | None = None
        self.outcome: str | None = None

    def times_so_far(self, decoder: DecoderUse) -> RequestTimes:
        """The request's times as its clock reads them now, with what the decoder used (nothing, before it runs)."""
        clock = self.job.clock
        return RequestTimes(wall_seconds=clock.elapsed(), gateway_seconds=clock.seconds["gateway"],
                            tokenize=self.tokenize, retrieve=self.retrieve, decoder=decoder,
                            interrupted_seconds=clock.interrupted_seconds())

    def settle(self, outcome: str, decoder: DecoderUse, completion_tokens: int, finish_reason: str | None,
               error: str | None = None, client_refusal: bool = False) -> Settlement:
        if self.settlement is not None:
            return self.settlement
        times = self.times_so_far(decoder)
        self.outcome, self.times = outcome, times
        try:
            self.settlement = self.ledger.charge(Charge(
                tenant=self.job.tenant.id, model=self.model, outcome=outcome, times=times,
                prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens, finish_reason=finish_reason,
                trace_id=self.trace_id, request_id=self.request_id, error=error, client_refusal=client_refusal),
                self.span)
        finally:
            self.hold.settle(self.settlement.cost.total if self.settlement else None)
        self.span.set_attribute("gen_ai.response.model", self.model)
        if finish_reason:
            self.span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if outcome in ("failed", "deadline"):
            self.span.set_status(Status(StatusCode.ERROR, error or outcome))
        self.span.end()
        return self.settlement


class Pipeline:
    def __init__(self, settings: GatewaySettings, upstreams: Upstreams, ledger: Ledger, tracer: trace.Tracer,
                 solo: SoloDecoder, cheaper: DecoderRoute | None = None) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.tracer = tracer
        self.solo = solo
        self.standard = DecoderRoute(settings.model_name, upstreams.decoder, ledger)
        self.cheaper = cheaper
        self.metrics = generation_metrics()
        self.generations: set[Generation] = set()
        self.contexts: dict[str, int] = {}  # each decoder route's context, by model, once read
        for stage, budget in settings.stage_budgets_seconds.items():
            self.metrics.stage_budget.labels(stage).set(budget)

    def route(self, hold: Hold) -> DecoderRoute:
        """The cheaper decoder for a tenant in Warning whose budget asks for it, when one is deployed."""
        return self.cheaper if self.cheaper is not None and hold.wants_cheaper else self.standard

    async def start(self, job: Job, hold: Hold) -> Generation:
        with job.clock.stage("gateway"):
            route = self.route(hold)
            span = self.tracer.start_span(f"{job.operation} {self.settings.model_name}", attributes={
                "gen_ai.operation.name": job.operation,
                "gen_ai.request.model": self.settings.model_name,
                "gen_ai.request.max_tokens": job.max_tokens,
                "gen_ai.request.temperature": job.temperature,
                "gen_ai.request.top_p": job.top_p,
                "lynx.tenant": job.tenant.id,
            })
            account = RequestAccount(route.ledger, route.model, job, span, hold)
        generation: Generation | None = None
        try:
            with trace.use_span(span, end_on_exit=False):
                generation = await self._open(job, account, route)
                await generation.first_token()
                return generation
        except BaseException as error:
            if generation is not None:
                generation.abandon("failed")  # a no-op once its stream has settled the request
            else:
                timed_out = isinstance(error, LynxError) and error.code == DEADLINE_EXCEEDED
                account.settle("deadline" if timed_out else "failed", DecoderUse(wall_seconds=0.0), 0, None,
                               describe(error), client_refusal=refused_by_client(error))
            if isinstance(error, LynxError) and account.settlement is not None:
                error.cost = account.settlement.cost.as_dict()
            raise

    async def drain(self, timeout: float) -> None:
        """Gateway shutdown: stop the streams still open and wait (bounded) until each is charged."""
        pending = list(self.generations)
        for generation in pending:
            generation.abandon("failed", stopping_error())
        if pending:
            await asyncio.wait([g.task for g in pending if g.task], timeout=timeout)

    async def context_tokens(self, route: DecoderRoute) -> int:
        """The context of the decoder ``route`` leads to, read from it once. While it cannot be read, the most any
        decoder holds: the decoder then refuses what does not fit its own, with the same error."""
        if route.model not in self.contexts:
            try:
                instance = route.decoders.acquire()
                try:
                    info = await get_json(route.decoders.client, "decoder", route.decoders.url(instance, "/v1/info"),
                                          DecoderInfo)
                finally:
                    route.decoders.release(instance)
            except LynxError:
                return MAX_CONTEXT_TOKENS
            self.contexts[route.model] = info.max_context
        return self.contexts[route.model]

    async def _open(self, job: Job, account: RequestAccount, route: DecoderRoute) -> Generation:
        clock = job.clock
        passages = await self._retrieve(job, account)
        with clock.stage("gateway"):
            context_tokens = await self.context_tokens(route)
            if job.operation == "chat":
                path, body = "/v1/chat", ChatTemplateRequest(messages=with_passages(job.messages, passages))
            else:
                path, body = "/v1/tokenize", TokenizeRequest(text=job.prompt)
        try:
            with clock.stage("tokenize"):
                answer = await post_json(self.upstreams.tokenizer, "tokenizer", path, body, TokenizeResponse)
        except BaseException:
            account.tokenize = failed_call(clock.seconds["tokenize"])
            raise
        with clock.stage("gateway"):
            account.tokenize = RemoteCall(answer.seconds, clock.seconds["tokenize"])
            account.prompt_tokens = answer.count
            account.span.set_attribute("gen_ai.usage.input_tokens", answer.count)
            self.metrics.stage_duration.labels("tokenize").observe(clock.seconds["tokenize"])
            remaining = self.settings.request_deadline_seconds - clock.elapsed()
            if remaining <= 0:
                raise self.deadline_error()
            max_tokens = await self._reserve(job, account, route, context_tokens)
            request = GenerateRequest(
                input_ids=answer.ids, max_tokens=max_tokens, temperature=job.temperature, top_p=job.top_p,
                stop=job.stop, seed=job.seed, deadline_seconds=remaining, tenant=job.tenant.id)
            generation = Generation(self, job, account, passages, request, route)
        # The decoder's timer starts once the gateway's has stopped: timers that overlap, even by the moment the
        # process is descheduled between two lines, count that moment twice (stage_counted_twice).
        generation.start()
        return generation

    async def _reserve(self, job: Job, account: RequestAccount, route: DecoderRoute, context_tokens: int) -> int:
        """Reserves the request's worst case (429 when it does not fit); returns the max_tokens its cost ceiling allows.
        A prompt that cannot fit the decoder's context with those max_tokens is refused first (400), unreserved."""
        ceilings = [c for c in (job.max_cost_eur, account.hold.per_request_cap_eur) if c is not None]
        estimate = affordable_estimate(min(ceilings, default=None), account.times_so_far(DecoderUse(0.0)),
                                       account.prompt_tokens, job.max_tokens, self.solo, route.ledger.rates)
        if ceilings:
            account.span.set_attribute("lynx.budget.max_tokens", estimate.max_tokens)
        if error := context_error(account.prompt_tokens, estimate.max_tokens, context_tokens):
            raise LynxError(400, error, CONTEXT_LENGTH_EXCEEDED, param="messages" if job.messages else "prompt")
        await account.hold.reserve(estimate)
        account.span.set_attribute("lynx.budget.reserved_eur", estimate.eur)
        return estimate.max_tokens

    def deadline_error(self, waited_seconds: float = 0.0) -> LynxError:
        return deadline_error(self.settings.request_deadline_seconds, waited_seconds)

    async def _retrieve(self, job: Job, account: RequestAccount) -> list[RetrievedPassage]:
        query = retrieval_query(job.messages)
        if job.operation != "chat" or job.retrieval_top_k == 0 or not query:
            return []
        clock = job.clock
        try:
            with clock.stage("retrieve"):
                answer = await post_json(self.upstreams.retriever, "retriever", "/v1/retrieve",
                                         RetrieveRequest(query=query, top_k=job.retrieval_top_k), RetrieveResponse)
        except BaseException:
            account.retrieve = failed_call(clock.seconds["retrieve"])
            raise
        with clock.stage("gateway"):
            account.retrieve = RemoteCall(answer.seconds, clock.seconds["retrieve"])
            self.metrics.stage_duration.labels("retrieve").observe(clock.seconds["retrieve"])
            return [p for p in answer.passages if p.score >= self.settings.retrieval_min_score]


def deadline_error(deadline_seconds: float, waited_seconds: float) -> LynxError:
    """504; Retry-After is how long it waited for a decoder slot in vain (the backlog ahead was at least that long),
    at least 1 s."""
    retry = str(max(1, math.ceil(waited_seconds)))
    return LynxError(504, f"The request's deadline ({deadline_seconds:g} s) ran out before its first token was ready; "
                     f"retry after {retry} s, or send a shorter prompt.", DEADLINE_EXCEEDED, "timeout_error",
                     headers={"Retry-After": retry})


def failed_call(wall_seconds: float) -> RemoteCall:
    """A call that failed (unreachable, refused, timed out) reported no busy time, but its wall time was the
    request's: left out, the request's stages would not add up to its stopwatch (stage_missing_timer)."""
    return RemoteCall(0.0, wall_seconds)


def stopping_error() -> LynxError:
    return LynxError(503, "The gateway stopped before the decoder finished; retry.", "gateway_stopping",
                     "server_error", headers={"Retry-After": "1"})


def refused_by_client(failure: BaseException | None) -> bool:
    return isinstance(failure, LynxError) and failure.status < 500


def describe(error: BaseException) -> str:
    return error.message if isinstance(error, LynxError) else type(error).__name__


class Generation:
    """A decoder stream in progress, read by its own task; iterate ``text()``, then read the settlement."""

    def __init__(self, pipeline: Pipeline, job: Job, account: RequestAccount, passages: list[RetrievedPassage],
                 request: GenerateRequest, route: DecoderRoute) -> None:
        self.pipeline = pipeline
        self.route = route
        self.job = job
        self.account = account
        self.passages = passages
        self.request = request
        self.deltas: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.started: StreamStarted | None = None
        self.finished: StreamFinished | None = None
        self.failure: LynxError | None = None
        self.abandoned: str | None = None
        self.completion_tokens = 0
        self.consumed = (0.0, 0.0)  # prefill and decode seconds, as of the decoder's last delta
        self._first = asyncio.Event()
        self._response: httpx.Response | None = None
        self.instance: str | None = None  # the decoder instance that holds the sequence (its cancel goes there)
        self._in_flight = False  # counted in flight on ``instance``
        self._helpers: set[asyncio.Task] = set()

    @property
    def trace_id(self) -> str:
        return self.account.trace_id

    @property
    def model(self) -> str:
        return self.route.model

    @property
    def settlement(self) -> Settlement | None:
        return self.account.settlement

    @property
    def finish_reason(self) -> str:
        """What the client is told: stop, length or deadline."""
        reason = self.finished.finish_reason if self.finished else "stop"
        return reason if reason in ("stop", "length", "deadline") else "stop"

    def timings(self) -> dict[str, float]:
        """The settled request's seconds, as charged (for the response's ``lynx.timings``)."""
        times = self.account.times
        t = self.finished.timings if self.finished else None
        return {"queue_seconds": t.queue_seconds if t else 0.0, "prefill_seconds": times.decoder.prefill_seconds,
                "decode_seconds": times.decoder.decode_seconds, "decode_steps": t.decode_steps if t else 0,
                "wall_seconds": times.wall_seconds, "other_seconds": times.gateway_seconds,
                "tokenize_seconds": times.tokenize.busy_seconds, "retrieve_seconds": times.retrieve.busy_seconds}

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        stop_timer = self.job.clock.start_stage("decoder")  # from now: no gap before the task runs
        self.task = asyncio.create_task(self._pump(stop_timer), name="lynx-decoder-stream")
        self.pipeline.generations.add(self)

    async def first_token(self) -> None:
        """Returns once a token is ready; raises when the request ended before its first one."""
        await self._first.wait()
        if self.completion_tokens == 0 and self.settlement is not None:
            raise self._with_cost(self.failure or self._ended_without_tokens())

    async def text(self):
        """Text deltas as the decoder produces them; raises the failure, if the generation failed."""
        while (delta := await self.deltas.get()) is not END:
            yield delta
        if self.failure is not None:
            raise self._with_cost(self.failure)

    def abandon(self, outcome: str, failure: LynxError | None = None) -> None:
        """Nobody will read the rest (the client left), or the gateway is stopping: stop the decoder early.

        Synchronous, so it runs even from a cancelled task; the stream task keeps reading until the
        decoder's final report arrives (or CANCEL_GRACE_SECONDS pass) and charges the request. A client
        still listening gets ``failure``: what it was sent is not a whole answer."""
        if self.settlement is not None or self.abandoned:
            return
        self.abandoned = outcome
        self.failure = self.failure or failure
        if self.started is not None:
            self._spawn(self._cancel_upstream())
        asyncio.get_running_loop().call_later(CANCEL_GRACE_SECONDS, self._give_up)

    # --- the stream task --------------------------------------------------------------------
    async def _pump(self, stop_timer) -> None:
        try:
            with trace.use_span(self.account.span, end_on_exit=False):
                await self._read()
        except LynxError as error:
            self.failure = error
        except httpx.HTTPError as error:
            self.failure = unreachable("decoder", error)
            if isinstance(error, (httpx.NetworkError, httpx.RemoteProtocolError)):  # the instance went away
                self._drop_instance(type(error).__name__)
        except ValidationError:
            self.failure = LynxError(502, "The decoder sent an event this gateway cannot read; check that both run "
                                     "the same lynx version.", "upstream_error", "server_error")
        except asyncio.CancelledError:
            self.failure = stopping_error()
            self.abandoned = self.abandoned or "failed"
            raise
        finally:
            stop_timer()
            try:
                self._settle()
            finally:  # the reader must never wait forever, even if charging failed
                self._first.set()
                self.deltas.put_nowait(END)
                self.pipeline.generations.discard(self)
                self._release_instance()
            if self._response is not None:
                await self._response.aclose()

    async def _read(self) -> None:
        decoders = self.route.decoders
        # Sent again once, to another instance, if the one that got it was stopping or refused the connection: it
        # did not take the request, which costs nothing there.
        for attempt in range(2):
            self._release_instance()
            self.instance, self._in_flight = decoders.acquire(), True
            request = decoders.client.build_request(
                "POST", decoders.url(self.instance, "/v1/generate"), content=self.request.model_dump_json(),
                headers={"content-type": "application/json"})
            try:
                self._response = await decoders.client.send(request, stream=True)
            except httpx.ConnectError as error:
                self._drop_instance(type(error).__name__)
                if attempt:
                    raise unreachable("decoder", error) from error
                continue
            except httpx.HTTPError as error:
                raise unreachable("decoder", error) from error
            if self._response.status_code == 200:
                break
            await self._response.aread()
            if instance_broken(self._response):
                self._drop_instance(f"status {self._response.status_code}")
            if attempt or not instance_stopping(self._response):
                raise upstream_failure("decoder", self._response)
        async for line in body_lines(self._response):
            if not line:
                continue
            event = parse_event(line)
            if isinstance(event, StreamStarted):
                self.started = event
                if self.abandoned:
                    self._spawn(self._cancel_upstream())
            elif isinstance(event, TokenDelta):
                self._on_delta(event)
            else:
                self.finished = event
                if event.finish_reason == "error":
                    self.failure = LynxError(502, "The decoder failed while generating; the request id in "
                                             "X-Request-ID finds it in the logs.", "upstream_error", "server_error")
                return
        raise LynxError(502, "The decoder's stream ended without its final report.", "upstream_error",
                        "server_error")

    def _on_delta(self, event: TokenDelta) -> None:
        self.consumed = (event.prefill_seconds, event.decode_seconds)
        if event.ids:
            if self.completion_tokens == 0:
                exemplar = {"trace_id": self.trace_id} if self.trace_id else None
                self.pipeline.metrics.time_to_first_token.labels(self.model).observe(
                    self.job.clock.elapsed(), exemplar)
            self.completion_tokens += len(event.ids)
            self._first.set()
        if event.text and not self.abandoned:
            self.deltas.put_nowait(event.text)

    def account_use(self) -> DecoderUse:
        """What the decoder consumed: its final report, or the last figures it sent before it went silent."""
        wall = self.job.clock.seconds["decoder"]
        if self.finished is None:
            return DecoderUse(wall_seconds=wall, prefill_seconds=self.consumed[0], decode_seconds=self.consumed[1])
        t = self.finished.timings
        return DecoderUse(wall_seconds=wall, prefill_seconds=t.prefill_seconds, decode_seconds=t.decode_seconds,
                          resident_seconds=t.resident_seconds, engine_busy_seconds=t.engine_busy_seconds)

    def _settle(self) -> None:
        finished = self.finished
        completion_tokens = finished.usage.completion_tokens if finished else self.completion_tokens
        error = self.failure.message if self.failure else None
        if finished is not None:
            for stage, seconds in (("queue", finished.timings.queue_seconds),
                                   ("prefill", finished.timings.prefill_seconds),
                                   ("decode", finished.timings.decode_seconds)):
                self.pipeline.metrics.stage_duration.labels(stage).observe(seconds)
            error = error if finished.error is None else f"{error}: {finished.error}"
        self.account.settle(outcome_of(self.abandoned, self.failure, finished), self.account_use(), completion_tokens,
                            finished.finish_reason if finished else None, error, refused_by_client(self.failure))

    def _ended_without_tokens(self) -> LynxError:
        if self.finished is not None and self.finished.finish_reason == "deadline":
            return self.pipeline.deadline_error(self.finished.timings.queue_seconds)
        return LynxError(502, "The decoder ended the request before its first token.", "upstream_error",
                         "server_error")

    def _with_cost(self, error: LynxError) -> LynxError:
        if self.settlement is not None:
            error.cost = self.settlement.cost.as_dict()
        return error

    async def _cancel_upstream(self) -> None:
        with trace.use_span(self.account.span, end_on_exit=False):
            try:
                decoders = self.route.decoders
                await decoders.client.post(decoders.url(self.instance, self.started.cancel_url))
            except httpx.HTTPError as error:  # closing the stream makes the decoder stop and log it instead
                log.warning("decoder_cancel_failed", extra={"fields": {"error": type(error).__name__}})
                if self._response is not None:
                    await self._response.aclose()

    def _drop_instance(self, why: str) -> None:
        if self.instance is not None:
            self.route.decoders.failed(self.instance, why)

    def _release_instance(self) -> None:
        if self._in_flight:
            self.route.decoders.release(self.instance)
            self._in_flight = False

    def _give_up(self) -> None:
        if self.task is not None and not self.task.done():
            log.warning("decoder_final_report_missing", extra={"fields": {"after_s": CANCEL_GRACE_SECONDS}})
            self.task.cancel()

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
