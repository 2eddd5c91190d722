"""An error no handler expected, in a real server (uvicorn) built by lynx's service factory: a 500 in the OpenAI shape
that carries the request's ids, and the keep-alive connection it came on still serves the next request."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

from lynx.service.app import create_service_app
from lynx.service.settings import ServiceSettings

from .conftest import wait_for


def failing_app() -> FastAPI:
    router = APIRouter()

    @router.post("/v1/fail")
    async def fail() -> dict:
        raise RuntimeError("a bug no handler expected")

    @router.post("/v1/work")
    async def work() -> dict:
        return {"done": True}

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    return create_service_app(name="unhandled-test", settings=ServiceSettings(port=8099), lifespan=lifespan,
                              router=router)


@pytest.fixture
def server_url() -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(failing_app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the test server to listen")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_an_unhandled_error_keeps_its_ids_and_the_connection(server_url: str):
    with httpx.Client(base_url=server_url, timeout=10) as client:
        for number in range(10):
            failed = client.post("/v1/fail", headers={"X-Request-ID": f"req-{number}"})
            assert failed.status_code == 500
            body = failed.json()
            assert body["error"]["code"] == "internal_error" and body["error"]["type"] == "server_error"
            assert failed.headers["x-request-id"] == body["lynx"]["request_id"] == f"req-{number}"
            assert len(failed.headers["x-lynx-trace-id"]) == 32
            assert failed.headers["x-lynx-trace-id"] == body["lynx"]["trace_id"]
            served = client.post("/v1/work")
            assert served.json() == {"done": True}
            assert (served.extensions["network_stream"].get_extra_info("client_addr")
                    == failed.extensions["network_stream"].get_extra_info("client_addr")), "the connection was closed"
