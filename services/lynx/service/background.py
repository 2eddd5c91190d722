"""Work a service runs beside its requests, for as long as it runs: a periodic task, started in a lifespan and
cancelled (and awaited) when the lifespan ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def every(seconds: float, work: Callable[[], Awaitable[None]], log: logging.Logger,
                failed: str) -> AsyncIterator[None]:
    """Runs ``work`` every ``seconds`` while the block runs. A round that fails is logged (event ``failed``, with its
    traceback) and the next one tried: the task outlives any one failure."""

    async def rounds() -> None:
        while True:
            try:
                await work()
            except Exception:
                log.exception(failed)
            await asyncio.sleep(seconds)

    task = asyncio.create_task(rounds())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
