"""A stopping service drains while it still listens: new work held a while then refused cleanly, work under way
finished (or ended early near the end of the grace), one more scrape waited for when Prometheus (not a person)
reads the process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from lynx.service.app import create_service_app
from lynx.service.settings import ServiceSettings
from lynx.service.shutdown import HOLD_SECONDS, LINGER_SECONDS, STOPPING_CODE, Drain


def stopping_app() -> FastAPI:
    router = APIRouter()

    @router.post("/v1/work")
    async def work() -> dict:
        return {"done": True}

    @router.post("/v1/work/{item}/cancel")
    async def cancel(item: str) -> dict:
        return {"cancelled": item}

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    return create_service_app(name="drain-test", settings=ServiceSettings(port=8099), lifespan=lifespan, router=router,
                              new_work=lambda path: path == "/v1/work")


def test_a_stopping_service_holds_new_work_a_while_then_refuses_it_cleanly():
    app = stopping_app()
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        assert client.post("/v1/work").status_code == 200
        assert client.get("/readyz").status_code == 200
        app.state.drain.stopping = True
        started = time.monotonic()
        assert client.post("/v1/work").status_code == 503
        assert HOLD_SECONDS <= time.monotonic() - started < HOLD_SECONDS + 0.5
        held = pool.submit(client.post, "/v1/work")
        time.sleep(HOLD_SECONDS / 2)
        assert not held.done()
        app.state.drain.closed = True  # no longer listening: the requests held are answered at once
        refused = held.result(timeout=HOLD_SECONDS / 4)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json()["error"]["code"] == STOPPING_CODE and refused.json()["lynx"]["request_id"]
        assert client.post("/v1/work/7/cancel").json() == {"cancelled": "7"}  # not new work: still served
        assert client.get("/readyz").status_code == 503
        assert client.get("/metrics").headers["connection"] == "close"
        assert app.state.drain.last_scrape is None  # read by hand: a stopping service does not wait for such reads
        before = time.monotonic()
        metrics = client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"})
        assert metrics.status_code == 200 and metrics.headers["connection"] == "close"
        assert app.state.drain.last_scrape is not None and app.state.drain.last_scrape >= before


def run(drain: Drain) -> float:
    """Seconds ``drain.run()`` took."""
    started = time.monotonic()
    asyncio.run(drain.run())
    return time.monotonic() - started


def test_the_drain_waits_for_the_work_under_way_then_lingers():
    drain = Drain(grace_seconds=5.0, scrape_wait_seconds=5.0)
    drain.in_flight = 1

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        drain.in_flight = 0

    async def both() -> None:
        await asyncio.gather(drain.run(), finish_soon())

    started = time.monotonic()
    asyncio.run(both())
    assert 0.3 + LINGER_SECONDS <= time.monotonic() - started < 0.3 + LINGER_SECONDS + 0.5
    assert drain.stopping


def test_work_still_under_way_near_the_end_of_the_grace_is_ended_early():
    drain = Drain(grace_seconds=1.0, scrape_wait_seconds=5.0)
    drain.in_flight = 1
    ended_at: list[float] = []
    started = time.monotonic()

    async def end() -> None:
        ended_at.append(time.monotonic() - started)
        drain.in_flight = 0

    drain.end_early(0.6, end)
    run(drain)
    assert len(ended_at) == 1 and 0.35 <= ended_at[0] < 0.6


def test_a_process_never_scraped_does_not_wait_for_a_scrape():
    assert run(Drain(grace_seconds=5.0, scrape_wait_seconds=30.0)) < LINGER_SECONDS + 0.3


def test_a_scraped_process_waits_for_the_next_scrape_until_the_stops_budget_is_spent():
    """No scrape after the drain (Prometheus restarting, say): the wait uses the final-scrape wait and whatever the
    drain left of its grace, then gives up."""
    drain = Drain(grace_seconds=1.0, scrape_wait_seconds=1.0)
    drain.last_scrape = time.monotonic()
    assert 2.0 <= run(drain) < 2.5  # drained at once: waited the whole 1 s grace + 1 s scrape wait

    drain = Drain(grace_seconds=5.0, scrape_wait_seconds=30.0)
    drain.last_scrape = time.monotonic()

    async def scraped_soon() -> None:
        await asyncio.sleep(0.3)
        drain.last_scrape = time.monotonic()

    async def both() -> None:
        await asyncio.gather(drain.run(), scraped_soon())

    started = time.monotonic()
    asyncio.run(both())
    assert time.monotonic() - started < LINGER_SECONDS + 0.3  # the scrape came: no more waiting than the linger
