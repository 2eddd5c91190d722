"""CPU work of a request in a worker thread, so the event loop (and with it the probes and /metrics) stays free.

``timed_span`` runs the work inside the request's own span, and times it there: the seconds a request is
charged for start once a worker has taken it. Waiting for a free worker is other requests' processing,
already charged to them; the wait still shows in the gateway's wall time for the call, and in the trace
as the gap before the span.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from anyio import to_thread
from fastapi import Request
from opentelemetry.trace import Span

Result = TypeVar("Result")


async def timed_span(request: Request, name: str, work: Callable[[Span], Result]) -> tuple[Result, float]:
    """``work``'s result and its processing seconds, run in one of the app's workers (``app.state.workers``)."""
    tracer = request.app.state.tracer

    def timed() -> tuple[Result, float]:
        started = time.perf_counter()
        # anyio runs this in a copy of the request's context: the span's parent is the server span.
        with tracer.start_as_current_span(name) as span:
            result = work(span)
        return result, time.perf_counter() - started

    return await to_thread.run_sync(timed, limiter=request.app.state.workers)
