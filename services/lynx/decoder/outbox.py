"""What the engine thread hands to the requests' event loops, delivered once per engine step.

Every row of a decode step has something to send (its new tokens, or its end). Handing each one over on its own
(``call_soon_threadsafe`` per row) wakes the event loop once per row, and the loop's thread takes CPU and the GIL
from the engine's next step each time; one hand-over per loop per step carries the whole step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Recipient(Protocol):
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue


def _put_all(batch: list[tuple[Recipient, object]]) -> None:
    for recipient, event in batch:
        recipient.events.put_nowait(event)


class Outbox:
    def __init__(self) -> None:
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[Recipient, object]]] = {}

    def post(self, recipient: Recipient, event: object) -> None:
        self._batches.setdefault(recipient.loop, []).append((recipient, event))

    def send(self, undeliverable: Callable[[Recipient, object], None]) -> None:
        """Hand every posted event to its recipient's loop, one call per loop; ``undeliverable`` gets those whose loop
        is gone (closed: nobody will read them)."""
        batches, self._batches = self._batches, {}
        for loop, batch in batches.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:
                for recipient, event in batch:
                    undeliverable(recipient, event)
