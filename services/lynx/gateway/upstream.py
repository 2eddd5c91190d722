"""Calls from the gateway to the other services, with their failures turned into client errors."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ValidationError

from lynx.contracts.decoder import QUEUE_FULL, QUEUE_WAIT_EXCEEDS_DEADLINE
from lynx.service.errors import CONTEXT_LENGTH_EXCEEDED, LynxError
from lynx.gateway.decoder_pool import DecoderPool
from lynx.gateway.settings import GatewaySettings
from lynx.service.shutdown import STOPPING_CODE
from lynx.telemetry.tracing import instrumented_client

READINESS_TIMEOUT = httpx.Timeout(2.0)
# Upstream refusals that are the client's to fix (or to retry), passed through as they are; any other
# upstream error is the deployment's fault and becomes a 502.
CLIENT_FAULT_CODES = {CONTEXT_LENGTH_EXCEEDED, QUEUE_FULL, QUEUE_WAIT_EXCEEDS_DEADLINE}


class Upstreams:
    def __init__(self, tokenizer: httpx.AsyncClient, retriever: httpx.AsyncClient, decoder: DecoderPool) -> None:
        self.tokenizer = tokenizer
        self.retriever = retriever
        self.decoder = decoder

    @classmethod
    def connect(cls, settings: GatewaySettings, provider: TracerProvider) -> Upstreams:
        timeout = httpx.Timeout(settings.upstream_timeout_seconds)
        return cls(
            tokenizer=instrumented_client(provider, settings.tokenizer_url, timeout),
            retriever=instrumented_client(provider, settings.retriever_url, timeout),
            decoder=DecoderPool.connect(settings.decoder_addresses(), provider, decoder_timeout(settings),
                                        settings.decoder_probe_interval_seconds),
        )

    def clients(self) -> dict[str, httpx.AsyncClient]:
        return {"tokenizer": self.tokenizer, "retriever": self.retriever}

    async def all_ready(self) -> bool:
        """Every upstream's /readyz is 200, and a decoder instance was ready at its last probe. Probes make no spans:
        they would be one stray trace each."""
        async def ready(client: httpx.AsyncClient) -> bool:
            try:
                with suppress_http_instrumentation():
                    return (await client.get("/readyz", timeout=READINESS_TIMEOUT)).status_code == 200
            except httpx.HTTPError:
                return False
        return all(await asyncio.gather(*(ready(c) for c in self.clients().values()))) and self.decoder.ready()

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients().values()), self.decoder.aclose())


def decoder_timeout(settings: GatewaySettings) -> httpx.Timeout:
    """A stream may legitimately run for the whole request deadline."""
    return httpx.Timeout(settings.upstream_timeout_seconds, read=settings.request_deadline_seconds + 5)


def unreachable(service: str, error: Exception) -> LynxError:
    return LynxError(503, f"The {service} service is unreachable ({type(error).__name__}); retry shortly.",
                     "upstream_unavailable", "server_error", headers={"Retry-After": "1"})


def upstream_failure(service: str, response: httpx.Response) -> LynxError:
    """Context too long, queue full or a wait past the deadline pass through as the service said them; anything
    else is a 502."""
    try:
        error = dict(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        error = {}
    code, message = str(error.get("code", "")), str(error.get("message", ""))
    if code in CLIENT_FAULT_CODES:
        retry_after = response.headers.get("retry-after")
        return LynxError(response.status_code, message, code, error.get("type", "invalid_request_error"),
                         error.get("param"), {"Retry-After": retry_after} if retry_after else {})
    detail = f" ({code}: {message})" if code else ""
    return LynxError(502, f"The {service} service refused the gateway's call with {response.status_code}{detail}; "
                     "this is a deployment fault, not the request's.", "upstream_error", "server_error")


def instance_stopping(response: httpx.Response) -> bool:
    """The instance that answered is stopping and did not take the request (lynx.service.shutdown): it can be sent again,
    once, on a new connection, which a Service routes to another instance."""
    if response.status_code != 503:
        return False
    try:
        return response.json()["error"]["code"] == STOPPING_CODE
    except (ValueError, KeyError, TypeError):
        return False


def instance_broken(response: httpx.Response) -> bool:
    """A 5xx that is not the instance saying it is busy: it is stopping or unwell, and takes nothing more until a
    probe finds it ready (lynx.gateway.decoder_pool)."""
    if response.status_code < 500:
        return False
    try:
        return response.json()["error"]["code"] not in CLIENT_FAULT_CODES
    except (ValueError, KeyError, TypeError):
        return True


Answer = TypeVar("Answer", bound=BaseModel)


async def post_json(client: httpx.AsyncClient, service: str, path: str, payload: BaseModel,
                    answer: type[Answer]) -> Answer:
    """POST a typed payload and read a typed answer; sent again once if the instance that got it was stopping."""
    for attempt in range(2):
        try:
            response = await client.post(path, content=payload.model_dump_json(),
                                         headers={"content-type": "application/json"})
        except httpx.HTTPError as error:
            raise unreachable(service, error) from error
        if attempt or not instance_stopping(response):
            break
    return read_answer(service, response, answer)


async def get_json(client: httpx.AsyncClient, service: str, path: str, answer: type[Answer]) -> Answer:
    try:
        response = await client.get(path)
    except httpx.HTTPError as error:
        raise unreachable(service, error) from error
    return read_answer(service, response, answer)


def read_answer(service: str, response: httpx.Response, answer: type[Answer]) -> Answer:
    if response.status_code != 200:
        raise upstream_failure(service, response)
    try:
        return answer.model_validate_json(response.content)
    except ValidationError as error:
        raise LynxError(502, f"The {service} service answered in a shape this gateway cannot read.",
                        "upstream_error", "server_error") from error
