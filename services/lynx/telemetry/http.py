"""ASGI middleware every service runs: request and trace ids, RED metrics by route template, body limit."""

from __future__ import annotations

import json
import logging
import time
import uuid

from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lynx.service.errors import INTERNAL_ERROR_MESSAGE, error_body
from lynx.telemetry.request_id import HEADER as REQUEST_ID_HEADER
from lynx.telemetry.request_id import request_id_var, request_started_var
from lynx.telemetry.metrics import http_metrics
from lynx.telemetry.tracing import PROBE_PATHS, trace_ids

log = logging.getLogger("lynx.http")
UNKNOWN_ROUTE = "unknown"
TRACE_ID_HEADER = "x-lynx-trace-id"
# A handler whose response failed after its status line was sent records what the status would have been
# here (in the request's state), so RED metrics count it as the error it was.
EFFECTIVE_STATUS = "lynx_effective_status"
TOO_LARGE_CODE = "request_too_large"
CLIENT_CLOSED_STATUS = 499  # nginx's code for "the client closed the connection before the answer ended"


def route_template(scope: Scope) -> str:
    """The matched route's path template (set by the router), never the raw path: raw paths
    are unbounded label values."""
    return getattr(scope.get("route"), "path", UNKNOWN_ROUTE)


def valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def effective_status(scope: Scope, sent: int) -> int:
    return int(scope.get("state", {}).get(EFFECTIVE_STATUS, sent))


class ObservedRequests:
    """Counts and times every request, tags it with its request and trace ids, and logs one line for it.

    The request id comes from ``X-Request-ID`` when the caller sent a valid one (so it travels along a
    request's hops), else it is minted here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if valid_request_id(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started_token = request_started_var.set(time.time())
        scope.setdefault("state", {})
        server_span = trace.get_current_span()
        trace_id, _ = trace_ids(server_span)
        # Unsampled spans still have trace ids (responses and logs name them); only sampled ones reach the trace store.
        traced = server_span.get_span_context().trace_flags.sampled
        ids = [(REQUEST_ID_HEADER.encode(), request_id.encode())]
        if trace_id:
            ids.append((TRACE_ID_HEADER.encode(), trace_id.encode()))
        method = scope["method"]
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message["headers"] = [*message.get("headers", []), *ids]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as error:
            # Answered here, not by Starlette's last-resort handler: that one runs outside this middleware (no ids)
            # and raises on, and uvicorn then closes the connection under the client's next request. Only a response
            # already started must raise on: its body is cut short, and closing the connection is how the client sees it.
            if response_started:
                raise
            await answer_unhandled(error, send_with_ids)
        finally:
            elapsed = time.perf_counter() - started
            endpoint = route_template(scope)
            status = effective_status(scope, status)
            exemplar = {"trace_id": trace_id} if traced else None  # a link to a trace the store never got is dead
            metrics = http_metrics()
            metrics.requests.labels(endpoint, method, str(status)).inc(1, exemplar if status >= 400 else None)
            metrics.duration.labels(endpoint, method).observe(elapsed, exemplar)
            if endpoint not in PROBE_PATHS:
                metrics.traced.labels(endpoint).inc(int(traced))  # 0 still creates the series, beside the requests'
                log.info("request", extra={"fields": {
                    "endpoint": endpoint, "method": method, "status": status, "duration_s": round(elapsed, 6)}})
            request_id_var.reset(token)
            request_started_var.reset(started_token)


async def answer_unhandled(error: Exception, send: Send) -> None:
    """A 500 in the OpenAI shape, with the request's ids, for an error nothing handled; logged and on the span."""
    log.error("unhandled_error", exc_info=error)
    span = trace.get_current_span()
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    await send_json(send, 500, error_body(INTERNAL_ERROR_MESSAGE, "internal_error", "server_error"))


async def send_json(send: Send, status: int, body: dict) -> None:
    encoded = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]})
    await send({"type": "http.response.body", "body": encoded})


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.message())
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(send)

    def message(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes; send a smaller body."

    async def _refuse(self, send: Send) -> None:
        await send_json(send, 413, error_body(self.message(), TOO_LARGE_CODE))


class BodyTooLarge(HTTPException):
    """Raised while a body streams in; an HTTPException so that the framework's body parsing lets it through."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def metrics_response(request: Request) -> Response:
    """Prometheus text, or OpenMetrics (which carries exemplars) when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("accept", CONTENT_TYPE_LATEST))
    return Response(encoder(REGISTRY), media_type=content_type)
