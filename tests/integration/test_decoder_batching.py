"""The batching engine on the real int4 model: what a sequence generates (greedy) does not depend on what else the
engine holds. Each prompt generated alone is compared token for token with the same prompt generated while others
arrive, join the batch at other widths, and have their long prompts prefilled in chunks between decode steps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from lynx.decoder.engine import BatchingEngine, Finish, GenerationRequest, Sequence
from lynx.decoder.model import DecoderModel
from lynx.decoder.settings import DecoderSettings
from lynx.tokenizer.detok import IncrementalDetokenizer

pytestmark = pytest.mark.integration

CHUNK_TOKENS = 64
# Short prompts prefilled together, one exactly a chunk, long ones cut in 2 to 5 chunks with tails of every size.
PROMPT_LENGTHS = (5, 40, 64, 65, 130, 300, 3, 257)
GENERATED = 24


@pytest.fixture(scope="module")
def model(models: Path) -> DecoderModel:
    return DecoderModel(models / "decoder", threads=2)


def prompts() -> list[list[int]]:
    rng = np.random.default_rng(11)
    return [[1, *rng.integers(1000, 20000, n - 1).tolist()] for n in PROMPT_LENGTHS]


def engine_for(model: DecoderModel) -> BatchingEngine:
    settings = DecoderSettings(prefill_token_budget=CHUNK_TOKENS)
    engine = BatchingEngine(model, slots=len(PROMPT_LENGTHS), queue_capacity=16, max_context=2048,
                            prefill_token_budget=settings.prefill_token_budget, static_batching=False,
                            step_cost=settings.step_cost(),
                            detokenizer_factory=lambda: IncrementalDetokenizer(lambda ids: ""))
    engine.start()
    return engine


async def generated(sequence: Sequence) -> list[int]:
    ids: list[int] = []
    while not isinstance(event := await asyncio.wait_for(sequence.events.get(), 120), Finish):
        ids.extend(event.token_ids)
    assert event.reason == "length", event
    return ids


def greedy(prompt: list[int]) -> GenerationRequest:
    return GenerationRequest(prompt_ids=prompt, max_tokens=GENERATED, ignore_eos=True)


def test_a_prompt_generates_the_same_tokens_alone_and_in_a_busy_batch(model: DecoderModel):
    async def alone() -> list[list[int]]:
        engine = engine_for(model)
        try:
            return [await generated(engine.submit(greedy(p))) for p in prompts()]
        finally:
            engine.stop()

    async def together() -> tuple[list[list[int]], list[tuple[str, int, int]]]:
        engine = engine_for(model)
        calls: list[tuple[str, int, int]] = []  # (kind, rows, tokens per row)
        run, extend = model.run, model.extend

        def counted_extend(ids, past):
            calls.append(("extend", 1, len(ids)))
            return extend(ids, past)

        def counted_run(input_ids, mask, past):
            calls.append(("run", *input_ids.shape))
            return run(input_ids, mask, past)

        model.run, model.extend = counted_run, counted_extend
        try:
            tasks = []
            for prompt in prompts():  # arriving one by one, while the earlier ones decode
                tasks.append(asyncio.create_task(generated(engine.submit(greedy(prompt)))))
                await asyncio.sleep(0.03)
            return await asyncio.gather(*tasks), calls
        finally:
            model.run, model.extend = run, extend
            engine.stop()

    solo = asyncio.run(alone())
    batched, calls = asyncio.run(together())
    for length, one, shared in zip(PROMPT_LENGTHS, solo, batched, strict=True):
        assert shared == one, f"the {length}-token prompt generated differently in a batch"
    # The long prompts really were cut in chunks, and decode steps of several rows ran between them.
    chunks_after_the_first = sum(-(-n // CHUNK_TOKENS) - 1 for n in PROMPT_LENGTHS)
    assert sum(1 for kind, _, _ in calls if kind == "extend") == chunks_after_the_first
    assert max(rows for kind, rows, tokens in calls if kind == "run" and tokens == 1) >= 4
