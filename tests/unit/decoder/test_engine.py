"""The batching engine on a fake model: admission, batching modes, every way a sequence ends, accounting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import time

import pytest
from prometheus_client import REGISTRY

from lynx.accounting.shares import StepCostModel
from lynx.decoder.admission import PRIOR_MARGIN
from lynx.decoder.engine import BatchingEngine, Finish, GenerationRequest, QueueFull, Sequence, WaitExceedsDeadline
from lynx.decoder.sampling import SamplingParams
from lynx.tokenization.detok import IncrementalDetokenizer

from .fake_model import FakeModel

EVEN_SPLIT = StepCostModel(fixed_seconds=0.0, per_row_seconds=1.0, per_context_token_seconds=0.0)
YEAR_2020_NS = 1_577_836_800 * 10**9


def make_engine(model: FakeModel, *, slots: int = 4, budget: int = 512, static: bool = False,
                step_cost: StepCostModel = EVEN_SPLIT, start: bool = True,
                admit_by_deadline: bool = True) -> BatchingEngine:
    engine = BatchingEngine(model, slots=slots, queue_capacity=16, max_context=4096, prefill_token_budget=budget,
                            static_batching=static, step_cost=step_cost,
                            detokenizer_factory=lambda: IncrementalDetokenizer(
                                lambda ids: "".join(chr(97 + i % 26) for i in ids)),
                            admit_by_deadline=admit_by_deadline)
    if start:
        engine.start()
    return engine


def request(first: int, tokens: int, prompt_length: int = 4, **fields) -> GenerationRequest:
    return GenerationRequest(prompt_ids=[first] * prompt_length, max_tokens=tokens, ignore_eos=True, **fields)


async def finish_of(sequence: Sequence, timeout: float = 10.0) -> tuple[list[int], Finish]:
    ids: list[int] = []
    while True:
        event = await asyncio.wait_for(sequence.events.get(), timeout)
        if isinstance(event, Finish):
            return ids, event
        ids.extend(event.token_ids)


def run(coroutine):
    return asyncio.run(coroutine)


def test_every_sequence_generates_its_own_tokens_in_a_shared_batch():
    async def scenario():
        engine = make_engine(FakeModel())
        try:
            sequences = [engine.submit(request(first, 6)) for first in (3, 10, 20)]
            return [await finish_of(s) for s in sequences]
        finally:
            engine.stop()
    for (ids, finish), first in zip(run(scenario()), (3, 10, 20), strict=True):
        assert ids == [first + 1 + i for i in range(6)]
        assert finish.reason == "length" and finish.completion_tokens == 6


def calls_of(model: FakeModel, budget: int, requests: list[GenerationRequest]) -> tuple[list[tuple[str, int]], list]:
    """The model calls an engine makes for requests all waiting when it starts, and what each request got."""
    async def scenario():
        engine = make_engine(model, budget=budget, start=False)
        try:
            sequences = [engine.submit(r) for r in requests]
            engine.start()  # every request is waiting when the first iteration runs
            return [await finish_of(s) for s in sequences]
        finally:
            engine.stop()
    results = run(scenario())
    return model.calls, results


WARM_UP_CALLS = 5  # what the warm-up of a 4-slot engine calls (checked below)


@dataclass
class WarmedUp:
    calls: list[tuple[str, int]]
    engine: BatchingEngine
    results: list
    engine_seconds: float  # the engine's busy + idle, read at the end of the test's inner window
    inner_seconds: float  # the test's clock from after the engine said it serves until after that read
    outer_seconds: float  # the test's clock from before the engine started until after that read


def warmed_up(model: FakeModel, slots: int, budget: int) -> WarmedUp:
    """The model calls a warm-up makes, what requests sent once it is over get, and the engine's busy + idle time
    bracketed by two of the test's own measures (a loaded machine delays the test's thread, never the engine's clock)."""
    async def scenario():
        before_start = time.perf_counter()
        engine = make_engine(model, slots=slots, budget=budget, start=False)
        engine.start(warm_up=True)
        try:
            assert await asyncio.to_thread(engine.serving.wait, 10)
            serving_since = time.perf_counter()
            warm_up_calls = list(model.calls)
            sequences = [engine.submit(request(first, 5, prompt_length=first)) for first in (3, 7, 11)]
            results = [await finish_of(s) for s in sequences]
            engine_seconds = engine.clock.busy_seconds + engine.clock.idle_seconds()
            end = time.perf_counter()
            return WarmedUp(warm_up_calls, engine, results, engine_seconds, end - serving_since, end - before_start)
        finally:
            engine.stop()
    return run(scenario())


def test_the_warm_up_runs_each_kind_of_call_and_leaves_neither_time_nor_cache_behind():
    model = FakeModel(prefill_seconds=0.02, step_seconds=0.02)
    warm = warmed_up(model, slots=4, budget=8)
    calls, engine, results = warm.calls, warm.engine, warm.results
    # A long prompt's two chunks and a step after them, then every row's short prompt and a step of all rows.
    assert calls == [("prefill", 1), ("extend", 1), ("decode", 1), ("prefill", 4), ("decode", 4)]
    # The warm-up's calls (0.02 s each at least) are nobody's: the engine's busy + idle covers the time since it began
    # serving (at least the test's inner window) and not the warm-up (at most the outer window less the warm-up).
    warm_up_seconds = WARM_UP_CALLS * 0.02
    assert warm.inner_seconds <= warm.engine_seconds <= warm.outer_seconds - warm_up_seconds, vars(warm)
    attributed = sum(f.timings.prefill_seconds + f.timings.decode_seconds for _, f in results)
    assert attributed == pytest.approx(engine.clock.busy_seconds, rel=1e-9)
    # The fake model fails a step whose rows do not hold their own context: the warm-up's rows were not read.
    for (ids, finish), first in zip(results, (3, 7, 11), strict=True):
        assert (ids, finish.reason) == ([first + 1 + i for i in range(5)], "length")


def test_a_failing_warm_up_is_logged_and_the_engine_serves_anyway(caplog):
    model = FakeModel()
    model.fail_prefill_of = {model.pad_token_id}  # the warm-up's prompts are padding
    with caplog.at_level("ERROR", logger="lynx.decoder.engine"):
        warm = warmed_up(model, slots=2, budget=8)
        calls, results = warm.calls, warm.results
    assert calls == [("prefill", 1)]
    assert "warm_up_failed" in caplog.text
    assert [finish.reason for _, finish in results] == ["length"] * 3


def test_short_prompts_that_fit_the_budget_are_prefilled_together_in_one_call():
    three = [request(first, 3, prompt_length=8) for first in (1, 2, 3)]
    roomy, _ = calls_of(FakeModel(), 100, three)
    assert roomy[:2] == [("prefill", 3), ("decode", 3)], roomy
    tight, _ = calls_of(FakeModel(), 10, three)  # 8 + 8 tokens exceed a budget of 10: one prompt per step
    assert tight[:4] == [("prefill", 1), ("decode", 1), ("prefill", 1), ("decode", 2)], tight


def test_a_long_prompt_is_prefilled_in_chunks_between_the_running_streams_decode_steps():
    model = FakeModel()
    long_prompt = GenerationRequest(prompt_ids=list(range(1, 26)), max_tokens=3, ignore_eos=True)
    calls, results = calls_of(model, 10, [request(40, 8), long_prompt])
    # The short prompt first, then the long one 10 tokens a step (at offsets 0, 10, 20), a decode step in between.
    assert calls[:7] == [("prefill", 1), ("decode", 1), ("prefill", 1), ("decode", 1), ("extend", 1), ("decode", 1),
                         ("extend", 1)], calls
    assert calls[7] == ("decode", 2)  # whole, it joins the running stream
    (short_ids, _), (long_ids, long_finish) = results
    assert short_ids == [41 + i for i in range(8)] and long_ids == [26, 27, 28]
    assert long_finish.prompt_tokens == 25 and long_finish.timings.prefill_seconds >= 3 * model.prefill_seconds


def test_a_sequence_cancelled_between_its_chunks_ends_charged_for_the_chunks_it_had():
    async def scenario():
        model = FakeModel(prefill_seconds=0.05)
        engine = make_engine(model, budget=10)
        try:
            sequence = engine.submit(GenerationRequest(prompt_ids=list(range(1, 101)), max_tokens=3))
            while not any(kind == "extend" for kind, _ in model.calls):
                await asyncio.sleep(0.005)
            engine.cancel(sequence)
            return await finish_of(sequence), model.calls
        finally:
            engine.stop()
    (ids, finish), calls = run(scenario())
    chunks = sum(1 for kind, _ in calls if kind in ("prefill", "extend"))
    assert ids == [] and finish.reason == "cancelled" and finish.completion_tokens == 0
    assert 2 <= chunks < 10  # stopped between chunks, not after the whole prompt
    assert finish.timings.prefill_seconds >= (chunks - 1) * 0.05


def test_continuous_batching_admits_a_newcomer_as_soon_as_a_slot_frees_static_waits_for_the_batch():
    def admission_gap(static: bool) -> int:
        model = FakeModel()

        async def scenario():
            engine = make_engine(model, slots=2, static=static, start=False)
            try:
                short, long = engine.submit(request(1, 2)), engine.submit(request(2, 12))
                newcomer = engine.submit(request(3, 2))
                engine.start()
                _, long_end = await finish_of(long)
                _, new_end = await finish_of(newcomer)
                await finish_of(short)
                return long_end.timings.finished_ns - new_end.timings.admitted_ns
            finally:
                engine.stop()
        return run(scenario())

    assert admission_gap(static=False) > 0, "continuous: the newcomer joins while the long sequence still runs"
    assert admission_gap(static=True) < 0, "static: the newcomer waits until the whole batch has finished"


def test_cancelled_sequences_end_with_what_they_consumed():
    async def scenario():
        engine = make_engine(FakeModel(), slots=1)
        try:
            running = engine.submit(request(1, 1000))
            waiting = engine.submit(request(2, 5))
            await running.events.get()  # it has started generating
            engine.cancel(waiting)
            engine.cancel(running)
            return await finish_of(running), await finish_of(waiting), engine.slots_used
        finally:
            engine.stop()
    (ids, running_end), (_, waiting_end), slots_used = run(scenario())
    assert running_end.reason == "cancelled" and 0 < running_end.completion_tokens < 1000
    assert running_end.timings.prefill_seconds > 0 and running_end.timings.decode_seconds > 0
    assert waiting_end.reason == "cancelled" and waiting_end.timings.admitted_ns == 0
    assert waiting_end.timings.prefill_seconds == waiting_end.timings.decode_seconds == 0
    assert slots_used == 0


def test_the_deadline_ends_waiting_and_running_sequences():
    async def scenario():  # admission by deadline would refuse the waiting one at once
        engine = make_engine(FakeModel(step_seconds=0.005), slots=1, admit_by_deadline=False)
        try:
            soon = time.monotonic() + 0.15
            running = engine.submit(request(1, 10_000, deadline=soon))
            waiting = engine.submit(request(2, 5, deadline=soon))
            return await finish_of(running), await finish_of(waiting)
        finally:
            engine.stop()
    (ids, running_end), (waiting_ids, waiting_end) = run(scenario())
    assert running_end.reason == "deadline" and 0 < len(ids) < 10_000
    assert waiting_end.reason == "deadline" and waiting_ids == [] and waiting_end.timings.admitted_ns == 0


def test_a_request_that_would_wait_past_its_deadline_is_refused_at_once_unless_that_is_turned_off():
    """Before any sequence was measured, the step cost model's prior (here 1 s per row and step: 50 s for 50 tokens,
    times the margin) says whether it could finish."""
    async def scenario(admit_by_deadline: bool):
        engine = make_engine(FakeModel(), slots=1, start=False, admit_by_deadline=admit_by_deadline)
        soon = time.monotonic() + 5.0
        held = [engine.submit(request(3, 50, deadline=soon)),  # a free slot: admitted whatever its deadline
                engine.submit(request(4, 50))]  # no deadline: waits
        try:
            return engine.submit(request(5, 50, deadline=soon))
        except WaitExceedsDeadline as refused:
            return refused.refusal
        finally:
            held.clear()
    refusal = run(scenario(admit_by_deadline=True))
    assert not isinstance(refusal, Sequence)
    per_sequence = PRIOR_MARGIN * 50.0
    assert refusal.expected_wait_seconds == pytest.approx(2 * per_sequence)  # two ahead of it, one slot
    assert refusal.expected_finish_seconds == pytest.approx(3 * per_sequence)
    assert 4.0 < refusal.remaining_seconds <= 5.0
    assert refusal.retry_after_seconds >= 3 * per_sequence - 5
    assert isinstance(run(scenario(admit_by_deadline=False)), Sequence)
    assert REGISTRY.get_sample_value("lynx_decoder_rejected_requests_total", {"reason": "deadline"}) >= 1


def test_a_full_queue_is_refused_before_the_deadline_is_considered():
    async def scenario():
        engine = make_engine(FakeModel(), slots=1, start=False)
        engine.queue_capacity = 1
        engine.submit(request(3, 5))
        engine.submit(request(4, 5))
        with pytest.raises(QueueFull):
            engine.submit(request(5, 5, deadline=time.monotonic() + 60))
    run(scenario())


def test_the_time_per_sequence_is_measured_from_sequences_that_held_a_slot_while_others_waited():
    async def scenario():
        engine = make_engine(FakeModel(step_seconds=0.005), slots=1)
        try:
            alone = engine.submit(request(3, 10))
            await finish_of(alone)
            unmeasured = engine.seconds_per_sequence  # nobody waited for its slot
            started = time.perf_counter()
            sequences = [engine.submit(request(first, 10)) for first in (3, 10, 20)]
            for sequence in sequences:
                await finish_of(sequence)
            return unmeasured, engine.seconds_per_sequence, time.perf_counter() - started
        finally:
            engine.stop()
    unmeasured, measured, wall = run(scenario())
    assert unmeasured is None
    # A hold of 10 tokens is at least the prefill that gives the first (2 ms, the fake's default) and 9 decode steps of
    # 5 ms (not 10 steps: on a quiet machine a hold measured 49.4 ms, under 50). The three held the one slot one after
    # the other within `wall`, so neither of the two measured held it longer than `wall` less the other two's shortest
    # holds (a mean of the two cannot exceed the longer one). Not wall / 2: that assumed equal holds, and one hold
    # stretched by a busy machine broke it.
    shortest_hold = 0.002 + 9 * 0.005
    assert shortest_hold <= measured <= wall - 2 * shortest_hold


def test_a_failure_during_admission_fails_every_sequence_held_and_the_engine_serves_on():
    model = FakeModel()
    model.fail_prefill_of = {7}

    async def scenario():
        engine = make_engine(model, slots=3, budget=100)
        try:
            running = engine.submit(request(1, 1000))
            await running.events.get()  # running before the others arrive
            joining, failing = engine.submit(request(2, 5)), engine.submit(request(7, 5))
            queued = engine.submit(request(3, 5))  # no slot for it: it waits
            ends = [await finish_of(s) for s in (running, joining, failing, queued)]
            after = await finish_of(engine.submit(request(4, 3)))
            return ends, after
        finally:
            engine.stop()
    # A fourth slot would let `queued` be admitted with the others; with three it waits behind them.
    ends, (after_ids, after_end) = run(scenario())
    for _, finish in ends:
        assert finish.reason == "error" and "prefill failed" in finish.error
        timings = finish.timings
        assert min(timings.submitted_ns, timings.first_token_ns, timings.finished_ns) > YEAR_2020_NS, "no 1970 spans"
    joining_end = ends[1][1]
    assert joining_end.timings.prefill_seconds > 0, "the prefill it got before the failure is charged"
    assert after_end.reason == "length" and after_ids == [5, 6, 7]


def test_a_sampling_failure_ends_that_sequence_alone_and_the_batch_decodes_on():
    model = FakeModel()
    model.nan_after = {33}  # the sequence from 30 reaches 33 at its third token; the others never do

    async def scenario():
        engine = make_engine(model)
        try:
            # Sampled, not greedy; a nucleus this small keeps only the fake's one likely token.
            sampled = SamplingParams(temperature=1.0, top_p=0.01)
            sequences = [engine.submit(request(first, 6, sampling=sampled)) for first in (3, 30, 50)]
            return [await finish_of(s) for s in sequences]
        finally:
            engine.stop()
    (ids_3, end_3), (ids_30, end_30), (ids_50, end_50) = run(scenario())
    assert end_30.reason == "error" and "sampling failed" in end_30.error and "NaN" in end_30.error
    assert ids_30 == [31, 32, 33] and end_30.completion_tokens == 3 and end_30.timings.decode_seconds > 0
    assert (end_3.reason, ids_3) == ("length", [4, 5, 6, 7, 8, 9])
    assert (end_50.reason, ids_50) == ("length", [51, 52, 53, 54, 55, 56])


def test_step_shares_add_up_to_the_busy_time_and_busy_plus_idle_to_the_wall_time():
    model = FakeModel(step_seconds=0.003)
    weighted = StepCostModel(fixed_seconds=0.001, per_row_seconds=0.0005, per_context_token_seconds=0.00001)

    async def scenario():
        engine = make_engine(model, step_cost=weighted)
        try:
            first = [engine.submit(request(i, 20, prompt_length=4 + 30 * i)) for i in range(1, 4)]
            await asyncio.sleep(0.05)  # some idle time in the middle
            second = [engine.submit(request(i, 10)) for i in range(4, 6)]
            ends = [(await finish_of(s))[1] for s in first + second]
            await asyncio.sleep(0.05)
            return engine, ends
        finally:
            engine.stop()

    started = time.perf_counter()
    engine, ends = run(scenario())
    wall = time.perf_counter() - started
    attributed = sum(f.timings.prefill_seconds + f.timings.decode_seconds for f in ends)
    assert attributed == pytest.approx(engine.clock.busy_seconds, rel=1e-9)
    assert engine.clock.busy_seconds + engine.clock.idle_seconds() == pytest.approx(wall, abs=0.02)
    longest = max(ends[:3], key=lambda f: f.prompt_tokens)
    shortest = min(ends[:3], key=lambda f: f.prompt_tokens)
    assert longest.timings.decode_seconds > shortest.timings.decode_seconds, "longer contexts pay more per step"
    for finish in ends:
        assert finish.timings.prefill_seconds + finish.timings.decode_seconds <= finish.timings.engine_busy_seconds


def test_a_sequence_whose_event_loop_is_gone_ends_in_the_decoders_unread_record():
    """Its caller's event loop closed without reading it: the engine still ends it, and counts what it consumed
    as unread (nobody else will charge it)."""
    def unread() -> float:
        return sum(REGISTRY.get_sample_value("lynx_decoder_unread_seconds_total", {"phase": phase}) or 0.0
                   for phase in ("prefill", "decode"))

    before = unread()
    engine = make_engine(FakeModel())
    try:
        async def submit_and_leave() -> Sequence:
            return engine.submit(request(5, 20))
        sequence = asyncio.run(submit_and_leave())  # the loop closes with the sequence just submitted
        deadline = time.monotonic() + 10
        while not (sequence.detached and unread() > before):
            assert time.monotonic() < deadline, "the sequence was never reported unread"
            time.sleep(0.01)
    finally:
        engine.stop()
    assert engine.slots_used == 0
