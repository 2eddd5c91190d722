"""The request id: minted or accepted by the first service, carried to every next hop, in every log line; and when
the request reached this service, also in every log line it causes."""

from __future__ import annotations

import contextvars

import httpx

HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("lynx_request_id", default="")
# Unix time the request being served arrived at this service (None outside a request).
request_started_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("lynx_request_started",
                                                                                  default=None)


async def forward_request_id(request: httpx.Request) -> None:
    """httpx event hook: the current request id travels to the next service, so all of them log the same one."""
    request_id = request_id_var.get()
    if request_id:
        request.headers[HEADER] = request_id
