"""A streaming response that always says how it ended, so the stream's owner can clean up.

An async generator's ``finally`` is not enough: a generator that was never started never runs
it, and one suspended in ``yield`` when the client leaves is closed only when it is collected.
The response's own ``__call__`` always returns or raises, so it reports the end from there,
synchronously (nothing that can be cancelled runs before the owner hears it).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class StreamEnd(Enum):
    SENT = "sent"  # the body iterator ran out (or the client left: Starlette cancels it silently)
    CLIENT_GONE = "client_gone"
    INTERRUPTED = "interrupted"  # cancelled (server shutdown) or failed while sending


class ObservedStream(StreamingResponse):
    def __init__(self, *args, on_end: Callable[[StreamEnd], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            self.on_end(StreamEnd.CLIENT_GONE)
            raise
        except BaseException:
            self.on_end(StreamEnd.INTERRUPTED)
            raise
        self.on_end(StreamEnd.SENT)
