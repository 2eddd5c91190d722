"""One request's path: retrieve -> chat template + tokenize -> decode (streamed) -> cost.

``Pipeline.start`` does everything that can still fail with a clean HTTP status (bad key
budget, context too long, queue full) before any byte of the response is sent; the returned
``Generation`` then streams text and closes the cost record when the decoder finishes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from lynx.errors import LynxError
from lynx.gateway.settings import GatewaySettings
from lynx.gateway.tenants import Tenant
from lynx.gateway.upstream import Upstreams, post_json, unreachable, upstream_failure
from lynx.telemetry.cost import CostBreakdown, CostRecorder, RemoteCall, RequestTimes
from lynx.telemetry.metrics import generation_metrics
from lynx.telemetry.tracing import trace_ids

log = logging.getLogger("lynx.gateway")
NO_CALL = RemoteCall(0.0, 0.0)
CONTEXT_INSTRUCTION = (
    "Answer the user's question. The passages below may help; use them only if they are relevant.\n\n")


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
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: str = ""
    retrieval_top_k: int = 0
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Outcome:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost: CostBreakdown
    identity_violations: list[str]
    timings: dict[str, float]


def with_passages(messages: list[dict[str, str]], passages: list[dict]) -> list[dict[str, str]]:
    """Put the retrieved passages into the system message (creating one if needed)."""
    if not passages:
        return messages
    context = CONTEXT_INSTRUCTION + "\n\n".join(f"[{p['source']}] {p['text']}" for p in passages)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + context}, *messages[1:]]
    return [{"role": "system", "content": context}, *messages]


def last_user_text(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


class Pipeline:
    def __init__(self, settings: GatewaySettings, upstreams: Upstreams, recorder: CostRecorder,
                 tracer: trace.Tracer) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.recorder = recorder
        self.tracer = tracer
        self.metrics = generation_metrics()
        for stage, budget in settings.stage_budgets_seconds.items():
            self.metrics.stage_budget.labels(stage).set(budget)

    async def start(self, job: Job) -> Generation:
        span = self.tracer.start_span(f"{job.operation} {self.settings.model_name}", attributes={
            "gen_ai.operation.name": job.operation,
            "gen_ai.request.model": self.settings.model_name,
            "gen_ai.request.max_tokens": job.max_tokens,
            "gen_ai.request.temperature": job.temperature,
            "gen_ai.request.top_p": job.top_p,
            "lynx.tenant": job.tenant.id,
        })
        try:
            with trace.use_span(span, end_on_exit=False):
                return await self._open(job, span)
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
            raise

    async def _open(self, job: Job, span: Span) -> Generation:
        passages, retrieve = await self._retrieve(job)
        if job.operation == "chat":
            answer, tokenize_wall = await post_json(self.upstreams.tokenizer, "tokenizer", "/v1/chat",
                                                    {"messages": with_passages(job.messages, passages)})
        else:
            answer, tokenize_wall = await post_json(self.upstreams.tokenizer, "tokenizer", "/v1/tokenize",
                                                    {"text": job.prompt})
        tokenize = RemoteCall(answer["seconds"], tokenize_wall)
        self.metrics.stage_duration.labels("tokenize").observe(tokenize_wall)
        span.set_attribute("gen_ai.usage.input_tokens", answer["count"])
        remaining = self.settings.request_deadline_seconds - (time.perf_counter() - job.started)
        payload = {"input_ids": answer["ids"], "max_tokens": job.max_tokens, "temperature": job.temperature,
                   "top_p": job.top_p, "stop": job.stop, "seed": job.seed, "deadline_seconds": max(remaining, 0.001)}
        decoder_started = time.perf_counter()
        request = self.upstreams.decoder.build_request("POST", "/v1/generate", json=payload)
        try:
            response = await self.upstreams.decoder.send(request, stream=True)
        except httpx.HTTPError as error:
            raise unreachable("decoder", error) from error
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise upstream_failure("decoder", response)
        return Generation(self, job, span, response, passages, retrieve, tokenize, decoder_started)

    async def _retrieve(self, job: Job) -> tuple[list[dict], RemoteCall]:
        query = last_user_text(job.messages)
        if job.operation != "chat" or job.retrieval_top_k == 0 or not query:
            return [], NO_CALL
        answer, wall = await post_json(self.upstreams.retriever, "retriever", "/v1/retrieve",
                                       {"query": query, "top_k": job.retrieval_top_k})
        self.metrics.stage_duration.labels("retrieve").observe(wall)
        relevant = [p for p in answer["passages"] if p["score"] >= self.settings.retrieval_min_score]
        return relevant, RemoteCall(answer["seconds"], wall)


class Generation:
    """A decoder stream in progress; iterate ``text()``, then read ``outcome``."""

    def __init__(self, pipeline: Pipeline, job: Job, span: Span, response: httpx.Response, passages: list[dict],
                 retrieve: RemoteCall, tokenize: RemoteCall, decoder_started: float) -> None:
        self.pipeline = pipeline
        self.job = job
        self.span = span
        self.response = response
        self.passages = passages
        self.retrieve = retrieve
        self.tokenize = tokenize
        self.decoder_started = decoder_started
        self.trace_id, _ = trace_ids(span)
        self.outcome: Outcome | None = None

    async def text(self) -> AsyncIterator[str]:
        """Text deltas as the decoder produces them; sets ``outcome`` at the end."""
        metrics = self.pipeline.metrics
        model = self.pipeline.settings.model_name
        first_token_seen = False
        try:
            with trace.use_span(self.span, end_on_exit=False):
                async for line in self.response.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if "finish_reason" in event:
                        self.outcome = self._close(event)
                        return
                    if event["ids"] and not first_token_seen:
                        first_token_seen = True
                        metrics.time_to_first_token.labels(model).observe(
                            time.perf_counter() - self.job.started, {"trace_id": self.trace_id} if self.trace_id else None)
                    if event["text"]:
                        yield event["text"]
            raise LynxError(502, "The decoder stream ended without finishing.", "upstream_error", "server_error")
        except httpx.HTTPError as error:
            raise unreachable("decoder", error) from error
        finally:
            await self.response.aclose()  # also tells the decoder to free the slot if we stopped early
            if self.outcome is None:
                self.span.set_status(Status(StatusCode.ERROR, "stream ended early"))
                log.info("stream_abandoned")
            self.span.end()

    def _close(self, event: dict) -> Outcome:
        now = time.perf_counter()
        timings, usage = event["timings"], event["usage"]
        if event["finish_reason"] == "error":
            raise LynxError(502, "The decoder failed while generating.", "upstream_error", "server_error")
        times = RequestTimes(
            wall_seconds=now - self.job.started, tokenize=self.tokenize, retrieve=self.retrieve,
            decoder_wall_seconds=now - self.decoder_started,
            prefill_seconds=timings["prefill_seconds"], decode_seconds=timings["decode_seconds"])
        model = self.pipeline.settings.model_name
        metrics = self.pipeline.metrics
        metrics.tokens.labels("input", model).inc(usage["prompt_tokens"])
        metrics.tokens.labels("output", model).inc(usage["completion_tokens"])
        for stage in ("queue", "prefill", "decode"):
            metrics.stage_duration.labels(stage).observe(timings[f"{stage}_seconds"])
        self.span.set_attributes({
            "gen_ai.usage.input_tokens": usage["prompt_tokens"],
            "gen_ai.usage.output_tokens": usage["completion_tokens"],
            "gen_ai.response.model": model,
            "gen_ai.response.finish_reasons": [event["finish_reason"]],
        })
        cost, violations = self.pipeline.recorder.record(
            times, tenant=self.job.tenant.id, output_tokens=usage["completion_tokens"], span=self.span,
            trace_id=self.trace_id)
        return Outcome(event["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"], cost, violations,
                       {**timings, "wall_seconds": times.wall_seconds, "other_seconds": times.other_seconds,
                        "tokenize_seconds": self.tokenize.busy_seconds, "retrieve_seconds": self.retrieve.busy_seconds})
