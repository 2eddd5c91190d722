from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter
from starlette.datastructures import State

from lynx.accounting.clock import StageClock
from lynx.contracts.budgets import BUDGET_HEADER_DESCRIPTIONS, BudgetStanding, TenantUsage
from lynx.contracts.errors import ErrorBody
from lynx.contracts.tokenizer import ChatMessage
from lynx.service.errors import LynxError
from lynx.gateway.budgets import Budgets
from lynx.gateway.orchestrator import Generation, Job, Pipeline
from lynx.gateway.responses import CHAT, COMPLETION, Envelope, Shape, sse
from lynx.gateway.schemas import (
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, GenerationFields, ModelList,
    TextCompletion, TextCompletionChunk,
)
from lynx.gateway.settings import GatewaySettings
from lynx.gateway.standing import standing
from lynx.accounting.usage import USAGE_UNAVAILABLE, SpendHistory
from lynx.service.bearer import bearer_token
from lynx.accounting.tenants import Tenant, TenantRegistry
from lynx.service.streaming import ObservedStream, StreamEnd
from lynx.telemetry.http import CLIENT_CLOSED_STATUS, EFFECTIVE_STATUS
from lynx.telemetry.request_id import request_id_var

log = logging.getLogger("lynx.gateway")
router = APIRouter(prefix="/v1")
COST_HEADER = "X-Lynx-Cost-EUR"
DEFAULT_MAX_TOKENS = {"chat": 256, "text_completion": 16}
# What the OpenAPI schema declares besides the 200 bodies. "4XX" also keeps FastAPI from declaring its own 422, which
# this API never sends (an invalid body is a 400).
UNAUTHORIZED = {401: {"model": ErrorBody, "description": "Missing or invalid API key."}}
# On every answer to a tenant with a budget (lynx.gateway.standing); absent for a tenant without one.
BUDGET_HEADERS = {"headers": {name: {"description": description, "schema": {"type": "string"}}
                              for name, description in BUDGET_HEADER_DESCRIPTIONS.items()}}
GENERATION_ERRORS = {
    "4XX": {**BUDGET_HEADERS, "model": ErrorBody, "description": (
        "400 invalid request (context_length_exceeded included), 401 missing or invalid API key, 404 unknown model, "
        "413 body too large, 429 insufficient_quota (the tenant's daily budget).")},
    502: {"model": ErrorBody, "description": "A service behind the gateway failed."},
    503: {"model": ErrorBody, "description": "The decoder's slots and queue are full (queue_full), every slot is "
                                             "taken and the request would not finish before its deadline "
                                             "(queue_wait_exceeds_deadline), or a service is unreachable; see "
                                             "Retry-After."},
    504: {"model": ErrorBody, "description": "The request's deadline ran out before its first token; see Retry-After."},
}


def generation_responses(body: type[BaseModel], chunk: type[BaseModel]) -> dict:
    """The 200 answer is JSON, or with "stream": true server-sent events: ``chunk``s (an error event in its place if
    the stream fails after its status line), then ``data: [DONE]``. Each event is declared as OpenAPI 3.2's
    ``itemSchema``, in full (no references: the chunk models are not among the schema's components)."""
    event_data = inline_refs(TypeAdapter(chunk | ErrorBody).json_schema())
    event = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
        {"const": "[DONE]"}, {"type": "string", "contentMediaType": "application/json", "contentSchema": event_data}]}}}
    return {200: {**BUDGET_HEADERS, "model": body, "content": {"text/event-stream": {"itemSchema": event}}},
            **GENERATION_ERRORS}


def inline_refs(schema: dict) -> dict:
    """``schema`` with every ``$ref`` to its own ``$defs`` replaced by the definition (the models are not recursive)."""
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(value) for value in node] if isinstance(node, list) else node

    return resolve(schema)


def authenticate(request: Request) -> Tenant:
    key = bearer_token(request.headers.get("authorization", ""))
    if key is None:
        raise LynxError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.", "missing_api_key",
                        "authentication_error", headers={"WWW-Authenticate": "Bearer"})
    registry: TenantRegistry = request.app.state.tenants
    tenant = registry.authenticate(key)
    if tenant is None:
        raise LynxError(401, "Invalid API key.", "invalid_api_key", "authentication_error",
                        headers={"WWW-Authenticate": "Bearer"})
    return tenant


def job_fields(body: GenerationFields, operation: str, settings: GatewaySettings, tenant: Tenant) -> dict:
    """The parts of a Job both endpoints fill the same way, checked against this deployment."""
    if body.model != settings.model_name:
        raise LynxError(404, f"The model '{body.model}' does not exist; this gateway serves "
                        f"'{settings.model_name}' (see GET /v1/models).", "model_not_found", param="model")
    max_tokens = body.requested_max_tokens or min(DEFAULT_MAX_TOKENS[operation], settings.max_tokens_limit)
    if max_tokens > settings.max_tokens_limit:
        raise LynxError(400, f"max_tokens is {max_tokens}; it must be at most {settings.max_tokens_limit}.",
                        "invalid_value", param="max_tokens")
    return {"tenant": tenant, "operation": operation, "max_tokens": max_tokens, "temperature": body.temperature,
            "top_p": body.top_p, "stop": body.stop_list(), "seed": body.seed, "max_cost_eur": body.lynx_max_cost_eur,
            "clock": StageClock()}


@router.get("/models", response_model=None, responses={200: {"model": ModelList}, **UNAUTHORIZED})
async def list_models(request: Request, _: Tenant = Depends(authenticate)) -> dict:
    settings: GatewaySettings = request.app.state.settings
    return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                        "owned_by": "lynx"}]}


@router.get("/lynx/usage", response_model=None, responses={
    200: {**BUDGET_HEADERS, "model": TenantUsage}, **UNAUTHORIZED,
    503: {"model": ErrorBody, "description": f"{USAGE_UNAVAILABLE}: Prometheus, which the spend figures come from, "
                                             "cannot be read, or this gateway is not given one; see Retry-After."}})
async def usage(request: Request, tenant: Tenant = Depends(authenticate)) -> dict:
    """The key's tenant's spend today, over 7 and 30 days, and its budget (lynx.accounting.usage)."""
    history: SpendHistory | None = request.app.state.usage
    if history is None:
        raise LynxError(503, "Usage cannot be read from this gateway: it is given no Prometheus to read spend from "
                        "(LYNX_GATEWAY_PROMETHEUS_URL is unset); ask its operator to set it.", USAGE_UNAVAILABLE,
                        "server_error")
    budgets: Budgets = request.app.state.budgets
    report = await asyncio.to_thread(history.report, tenant.id, budgets.decision(tenant.id), datetime.now(UTC))
    return report.model_dump(mode="json")


@router.post("/chat/completions", responses=generation_responses(ChatCompletion, ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request, tenant: Tenant = Depends(authenticate)):
    settings: GatewaySettings = request.app.state.settings
    top_k = settings.retrieval_top_k if body.retrieval_top_k is None else body.retrieval_top_k
    job = Job(**job_fields(body, "chat", settings, tenant),
              messages=[ChatMessage(role=m.role, content=m.text()) for m in body.messages], retrieval_top_k=top_k)
    return await respond(request, job, CHAT, body)


@router.post("/completions", responses=generation_responses(TextCompletion, TextCompletionChunk))
async def completions(body: CompletionRequest, request: Request, tenant: Tenant = Depends(authenticate)):
    settings: GatewaySettings = request.app.state.settings
    job = Job(**job_fields(body, "text_completion", settings, tenant), prompt=body.prompt_text())
    return await respond(request, job, COMPLETION, body)


async def respond(request: Request, job: Job, shape: Shape, body: GenerationFields):
    pipeline: Pipeline = request.app.state.pipeline
    budgets: Budgets = request.app.state.budgets
    with job.clock.stage("gateway"):  # timed as the gateway's own work, like everything it does for the request
        log.info("request_started", extra={"fields": {  # before admission: a refused request started too
            "tenant": job.tenant.id, "operation": job.operation, "model": body.model, "max_tokens": job.max_tokens,
            "stream": body.stream}})
        hold = budgets.admit(job.tenant.id)  # a tenant that may not spend is refused before any upstream call
        await hold.enter()
    generation = await pipeline.start(job, hold)
    envelope = Envelope(shape, generation.model)
    request_id = request_id_var.get()
    if body.stream:
        def on_end(end: StreamEnd) -> None:
            if generation.settlement is None:
                generation.abandon("failed" if end is StreamEnd.INTERRUPTED else "client_closed")
            if generation.abandoned == "client_closed":
                setattr(request.state, EFFECTIVE_STATUS, CLIENT_CLOSED_STATUS)

        return ObservedStream(stream(generation, envelope, request_id, body.include_usage, request.state,
                                     lambda: standing(budgets, job.tenant.id)),
                              media_type="text/event-stream", headers={"Cache-Control": "no-cache"}, on_end=on_end)
    try:
        text = "".join([delta async for delta in generation.text()])
    except asyncio.CancelledError:  # the server is stopping under us
        generation.abandon("failed")
        raise
    return JSONResponse(envelope.complete(text, generation, request_id, standing(budgets, job.tenant.id)),
                        headers={COST_HEADER: f"{generation.settlement.cost.total:.12f}"})


async def stream(generation: Generation, envelope: Envelope, request_id: str, include_usage: bool,
                 state: State, budget: Callable[[], BudgetStanding | None]) -> AsyncIterator[str]:
    yield envelope.chunk("", first=True)
    try:
        async for delta in generation.text():
            yield envelope.chunk(delta)
    except LynxError as error:  # the status line is gone: say it in the stream, count it as the error it is
        setattr(state, EFFECTIVE_STATUS, error.status)
        yield sse(error.body()) + "data: [DONE]\n\n"
        return
    yield envelope.final_chunks(generation, request_id, include_usage, budget())
