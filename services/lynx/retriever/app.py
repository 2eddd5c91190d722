from __future__ import annotations

from collections.abc import AsyncIterator

from anyio import CapacityLimiter
from fastapi import FastAPI

from lynx.retriever.embedder import Embedder
from lynx.retriever.index import PassageIndex
from lynx.retriever.routes import router
from lynx.retriever.settings import RetrieverSettings
from lynx.service.app import create_service_app


def create_app(settings: RetrieverSettings | None = None) -> FastAPI:
    settings = settings or RetrieverSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.embedder = Embedder(settings.embedder_dir, settings.threads)
        app.state.index = PassageIndex.load(settings.index_dir)
        app.state.workers = CapacityLimiter(settings.workers)
        yield

    return create_service_app(name="retriever", settings=settings, lifespan=lifespan, router=router)
