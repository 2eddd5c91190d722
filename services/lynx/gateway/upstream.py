"""Calls from the gateway to the other services, with their failures turned into client errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import TracerProvider

from lynx.errors import LynxError
from lynx.gateway.settings import GatewaySettings
from lynx.telemetry.tracing import instrumented_client

READINESS_TIMEOUT = httpx.Timeout(2.0)


@dataclass
class Upstreams:
    tokenizer: httpx.AsyncClient
    retriever: httpx.AsyncClient
    decoder: httpx.AsyncClient

    @classmethod
    def connect(cls, settings: GatewaySettings, provider: TracerProvider) -> Upstreams:
        timeout = httpx.Timeout(settings.upstream_timeout_seconds)
        return cls(
            tokenizer=instrumented_client(provider, settings.tokenizer_url, timeout),
            retriever=instrumented_client(provider, settings.retriever_url, timeout),
            # A stream may legitimately run for the whole request deadline.
            decoder=instrumented_client(provider, settings.decoder_url,
                                        httpx.Timeout(settings.upstream_timeout_seconds,
                                                      read=settings.request_deadline_seconds + 5)),
        )

    def named(self) -> dict[str, httpx.AsyncClient]:
        return {"tokenizer": self.tokenizer, "retriever": self.retriever, "decoder": self.decoder}

    async def all_ready(self) -> bool:
        """Every upstream's /readyz is 200. Probes make no spans: they would be one stray trace each."""
        async def ready(client: httpx.AsyncClient) -> bool:
            try:
                with suppress_http_instrumentation():
                    return (await client.get("/readyz", timeout=READINESS_TIMEOUT)).status_code == 200
            except httpx.HTTPError:
                return False
        return all(await asyncio.gather(*(ready(c) for c in self.named().values())))

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.named().values()))


def unreachable(service: str, error: Exception) -> LynxError:
    return LynxError(503, f"The {service} service is unreachable ({type(error).__name__}); retry shortly.",
                     "upstream_unavailable", "server_error", headers={"Retry-After": "1"})


def upstream_failure(service: str, response: httpx.Response) -> LynxError:
    """A client error upstream is the caller's to fix and passes through; anything else is ours."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {}
    retry_after = response.headers.get("retry-after")
    headers = {"Retry-After": retry_after} if retry_after else {}
    if 400 <= response.status_code < 500 or response.status_code == 503:
        return LynxError(response.status_code, error.get("message", f"{service} refused the request"),
                         error.get("code", "upstream_rejected"), error.get("type", "invalid_request_error"),
                         error.get("param"), headers)
    return LynxError(502, f"The {service} service failed ({response.status_code}).", "upstream_error",
                     "server_error")


async def post_json(client: httpx.AsyncClient, service: str, path: str, payload: dict) -> tuple[dict, float]:
    """The JSON answer and the wall time the call took."""
    started = time.perf_counter()
    try:
        response = await client.post(path, json=payload)
    except httpx.HTTPError as error:
        raise unreachable(service, error) from error
    if response.status_code != 200:
        raise upstream_failure(service, response)
    return response.json(), time.perf_counter() - started
