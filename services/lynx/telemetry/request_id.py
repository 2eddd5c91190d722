"""The request id: minted or accepted by the first service, carried to every next hop, in every log line."""

from __future__ import annotations

import contextvars

import httpx

HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("lynx_request_id", default="")


async def forward_request_id(request: httpx.Request) -> None:
    """httpx event hook: the current request id travels to the next service, so all of them log the same one."""
    request_id = request_id_var.get()
    if request_id:
        request.headers[HEADER] = request_id
