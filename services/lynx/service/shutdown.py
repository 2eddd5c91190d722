"""How a lynx service stops on SIGTERM: it drains while it still listens, then closes.

uvicorn alone closes the listening socket first, then waits for the requests under way. That loses two things:
Prometheus can no longer scrape the process, so whatever its last requests counted (a gateway's last charges)
never reaches it; and a client whose connection is caught between the kernel and the closing server gets it
reset, with no answer. So a lynx service, told to stop:

1. answers /readyz with 503, and holds new work (``Drain.refuses``) for up to a second, then refuses it with
   503 ``service_stopping``, Retry-After and ``Connection: close`` (a caller may try again at once: the request
   was not taken; through a Service, its new connection reaches another instance);
2. lets the requests under way finish; when the grace is about to run out, asks the app to end what is left
   cleanly (``Drain.end_early``: the gateway ends its streams with an error event, charged; the decoder ends its
   sequences with a final report), so that nothing is cut off mid-answer;
3. if Prometheus scrapes this process, waits for one more scrape, which reads the final counters: for as long as
   the stop allows (the final-scrape wait, plus whatever the drain left of its grace), since a Prometheus that is
   itself restarting or starved of CPU may skip a scrape or two, and a count never scraped is lost to it. A scrape
   is a GET /metrics with the header every Prometheus scrape carries (``SCRAPE_HEADER``): someone reading the
   page by hand is not waited for;
4. stops listening, and only then answers the requests still held. A client trying again meets no listener (a
   refused connection: nothing was sent). Holding is what spares a client that retries at once a connection reset
   under a request it had sent: without it, such a client reconnects thousands of times a second to an instance
   about to stop listening, and one of those connections is caught between the kernel and the closing server.

Then uvicorn closes the connections left, and the lifespan's shutdown flushes the spans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lynx.service.errors import error_body

log = logging.getLogger("lynx.service.shutdown")
API_PREFIX = "/v1/"
STOPPING_CODE = "service_stopping"
POLL_SECONDS = 0.05
# After the last request under way, the least time the instance keeps listening: a client whose answer came
# during the drain (with Connection: close) reconnects, and its next request is held like the others.
LINGER_SECONDS = 1.0
# New work waits this long (or until the instance stops listening) before it is refused.
HOLD_SECONDS = 1.0
# Once drained, uvicorn has only the held requests' refusals to send and idle connections to close.
AFTER_DRAIN_SECONDS = 5.0
# Sent by Prometheus (and the agents compatible with it) on every scrape.
SCRAPE_HEADER = b"x-prometheus-scrape-timeout-seconds"


def new_api_work(path: str) -> bool:
    return path.startswith(API_PREFIX)


class Drain:
    """A service's stop, as the module docstring says. ``in_flight`` counts the API requests under way (the held
    ones apart); ``closed`` is set once the service has stopped listening."""

    def __init__(self, grace_seconds: float, scrape_wait_seconds: float,
                 refuses: Callable[[str], bool] = new_api_work) -> None:
        self.grace_seconds = grace_seconds
        self.scrape_wait_seconds = scrape_wait_seconds
        self.refuses = refuses
        self.stopping = False
        self.closed = False
        self.in_flight = 0
        self.last_scrape: float | None = None  # monotonic time of the last GET /metrics
        self.enders: list[tuple[float, Callable[[], Awaitable[object]]]] = []

    def end_early(self, seconds_needed: float, end: Callable[[], Awaitable[object]]) -> None:
        """``end()`` makes the requests under way finish; it is called (repeatedly, it must be idempotent) from
        ``seconds_needed`` before the grace runs out, while requests are still under way."""
        self.enders.append((seconds_needed, end))

    def scrape_deadline(self, started: float) -> float:
        """Until when (monotonic) to wait for one more scrape, for a stop that began at ``started``: not at all if
        nothing scrapes this process, else until the stop's whole budget (the drain's grace and the final-scrape
        wait) is spent."""
        if self.last_scrape is None:
            return started
        return started + self.grace_seconds + self.scrape_wait_seconds

    async def run(self) -> None:
        """Steps 1 to 3; the caller stops listening, then sets ``closed``."""
        self.stopping = True
        started = time.monotonic()
        deadline = started + self.grace_seconds
        under_way = self.in_flight
        await until(lambda: not self.in_flight, deadline - max((s for s, _ in self.enders), default=0.0))
        ended_early = bool(self.in_flight and self.enders)
        while self.in_flight and self.enders and time.monotonic() < deadline:
            for _, end in self.enders:
                await end()
            await until(lambda: not self.in_flight, min(time.monotonic() + 0.5, deadline))
        drained = time.monotonic()
        waits = self.last_scrape is not None
        scraped = await until(lambda: (self.last_scrape or 0.0) > drained, self.scrape_deadline(started))
        await asyncio.sleep(max(0.0, drained + LINGER_SECONDS - time.monotonic()))
        log.info("drained", extra={"fields": {
            "requests_under_way": under_way, "requests_left": self.in_flight, "ended_early": ended_early,
            "drain_s": round(drained - started, 3), "final_scrape": scraped if waits else None,
            "after_drain_s": round(time.monotonic() - drained, 3)}})


async def until(condition: Callable[[], bool], deadline: float) -> bool:
    """Whether ``condition()`` held before ``deadline`` (monotonic)."""
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


class DrainingRequests:
    """Counts the API requests under way and the scrapes; once stopping, holds new work for a while, then refuses
    it; every response then closes its connection."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/metrics" and any(name == SCRAPE_HEADER for name, _ in scope["headers"]):
            self.drain.last_scrape = time.monotonic()

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.stopping:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        if not path.startswith(API_PREFIX):
            await self.app(scope, receive, closing)
            return
        if self.drain.stopping and self.drain.refuses(path):
            await until(lambda: self.drain.closed, time.monotonic() + HOLD_SECONDS)
            body = error_body("This service instance is stopping; retry (another instance, or this service once it "
                              "has restarted).", STOPPING_CODE, "server_error")
            await JSONResponse(body, status_code=503, headers={"Retry-After": "1"})(scope, receive, closing)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, closing)
        finally:
            self.drain.in_flight -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining (while it still listens) before its own shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets=None) -> None:
        if not self.force_exit:  # a second signal skips the drain, as it skips uvicorn's own wait
            await self.drain.run()
            for server in self.servers:
                server.close()
        self.drain.closed = True  # the held requests get their refusal, over connections that then close
        await super().shutdown(sockets)


def serve(app: FastAPI) -> None:
    """Runs a service app (lynx.service.create_service_app) until SIGTERM or SIGINT, then stops it as above."""
    settings = app.state.settings
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=AFTER_DRAIN_SECONDS)
    DrainingServer(config, app.state.drain).run()
