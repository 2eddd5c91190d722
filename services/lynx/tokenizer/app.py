from __future__ import annotations

from collections.abc import AsyncIterator

from anyio import CapacityLimiter
from fastapi import FastAPI

from lynx.service.app import create_service_app
from lynx.tokenization.text import ModelTokenizer
from lynx.tokenizer.routes import router
from lynx.tokenizer.settings import TokenizerSettings


def create_app(settings: TokenizerSettings | None = None) -> FastAPI:
    settings = settings or TokenizerSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.tokenizer = ModelTokenizer(settings.model_dir)
        app.state.workers = CapacityLimiter(settings.workers)
        yield

    return create_service_app(name="tokenizer", settings=settings, lifespan=lifespan, router=router)
