from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI

from lynx.decoder.engine import BatchingEngine
from lynx.decoder.model import DecoderModel
from lynx.decoder.routes import GENERATE_PATH, router
from lynx.decoder.settings import DecoderSettings
from lynx.service.app import create_service_app
from lynx.tokenization.detok import IncrementalDetokenizer
from lynx.tokenization.text import ModelTokenizer

# Ending every sequence takes one engine step; their streams then send the final reports.
ENGINE_STOP_SECONDS = 1.0


def create_app(settings: DecoderSettings | None = None) -> FastAPI:
    settings = settings or DecoderSettings()

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model, tokenizer = await asyncio.to_thread(
            lambda: (DecoderModel(settings.model_dir, settings.threads, settings.spin_wait), ModelTokenizer(settings.model_dir)))
        max_context = min(settings.max_context, model.context_length)
        engine = BatchingEngine(
            model, slots=settings.kv_slots, queue_capacity=settings.queue_capacity, max_context=max_context,
            prefill_token_budget=settings.prefill_token_budget,
            static_batching=settings.batching == "static", step_cost=settings.step_cost(),
            detokenizer_factory=lambda: IncrementalDetokenizer(tokenizer.decode),
            admit_by_deadline=settings.admit_by_deadline,
        )
        engine.faults = app.state.faults
        engine.start(warm_up=settings.warm_up)
        await asyncio.to_thread(engine.serving.wait)
        app.state.engine = engine
        # Sequences still running when the shutdown grace runs short end with their final report.
        app.state.drain.end_early(ENGINE_STOP_SECONDS, lambda: asyncio.to_thread(engine.stop))
        try:
            yield
        finally:
            engine.stop()

    return create_service_app(name="decoder", settings=settings, lifespan=lifespan, router=router,
                              new_work=lambda path: path == GENERATE_PATH)
