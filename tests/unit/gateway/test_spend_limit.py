"""A bounded request's decoder limit follows its tenant's money: when a top-up is due and how much it asks for
(lynx.gateway.spend_limit). Pure logic; tests/integration/test_budget_enforcement.py runs it against real processes."""

from __future__ import annotations

import pytest

from lynx.accounting.pricing import SoloDecoder
from lynx.accounting.shares import StepCostModel
from lynx.gateway.spend_limit import (
    DUE_BELOW, RAISE_TO, DecoderPace, Progress, Reserved, rest_seconds, seconds_per_token, starting_top_up,
    top_up_seconds,
)

RESERVED = Reserved(prefill_seconds=0.1, step_seconds=0.01, steps=63)  # a 64-token answer


def progress(tokens: int, decode: float, limit: float, prefill: float = 0.05, max_tokens: int = 64) -> Progress:
    return Progress(prefill_seconds=prefill, decode_seconds=decode, tokens=tokens, max_tokens=max_tokens,
                    limit_seconds=limit)


def test_what_a_reservation_was_priced_at_comes_from_the_solo_estimate_it_reserved():
    solo = SoloDecoder(0.001, StepCostModel(0.004, 0.001, 1e-5), margin=3.0)
    reserved = Reserved.of(solo, 40, 64)
    assert reserved.prefill_seconds == pytest.approx(solo.prefill_seconds(40))
    assert reserved.steps * reserved.step_seconds == pytest.approx(solo.decode_seconds(40, 64))
    assert Reserved.of(solo, 40, 1).steps == 0  # the prefill's token is the whole answer


def test_the_pace_is_the_sequence_s_own_once_it_decoded_and_the_rest_is_planned_at_twice_it_or_as_reserved():
    assert seconds_per_token(progress(11, decode=0.5, limit=1.0), RESERVED) == pytest.approx(0.05)  # 10 steps
    assert rest_seconds(progress(11, decode=0.5, limit=1.0), RESERVED) == pytest.approx(53 * DUE_BELOW * 0.05)
    # Batched so far, cheaper than reserved: the rest is planned at the reserved step (it may run alone next).
    assert rest_seconds(progress(11, decode=0.01, limit=1.0), RESERVED) == pytest.approx(53 * RESERVED.step_seconds)
    # Before its first decode step: the reserved step, as much slower as its prefill ran than reserved (here 5x).
    assert seconds_per_token(progress(1, decode=0.0, limit=1.0, prefill=0.5), RESERVED) == pytest.approx(0.05)


def test_a_sequence_running_as_reserved_needs_no_top_up():
    limit = RESERVED.prefill_seconds + RESERVED.steps * RESERVED.step_seconds  # what the reservation pays for
    # The reservation's margin is 3x the solo pace: a sequence at up to half the reserved pace (1.5x solo) is never
    # due, to its last token...
    for tokens in range(1, 65):
        assert top_up_seconds(progress(tokens, decode=(tokens - 1) * RESERVED.step_seconds / 2, limit=limit,
                                       prefill=RESERVED.prefill_seconds / 2), RESERVED) == 0, tokens
    # ... one at the reserved pace itself is (the decoder's forecast, its slowest recent step, may then be twice that).
    assert top_up_seconds(progress(1, decode=0.0, limit=limit, prefill=RESERVED.prefill_seconds), RESERVED) > 0


def test_a_sequence_slower_than_reserved_is_topped_up_until_the_limit_leaves_twice_the_rest_it_needs():
    slow = progress(11, decode=0.5, limit=0.8)  # 0.05 s a token, 5x the reserved step: 53 tokens left need 2.65 s
    extra = top_up_seconds(slow, RESERVED)
    assert extra == pytest.approx(RAISE_TO * DUE_BELOW * 53 * 0.05 - (0.8 - 0.55))
    raised = progress(11, decode=0.5, limit=0.8 + extra)
    assert top_up_seconds(raised, RESERVED) == 0  # once raised, not due again at the same pace
    # ... until the pace worsens enough (0.5 s a token for the next 10) that the limit leaves less than the rest needs.
    assert top_up_seconds(progress(21, decode=0.5 + 10 * 0.5, limit=0.8 + extra), RESERVED) > 0


def test_no_top_up_before_the_first_token_or_after_the_last():
    assert top_up_seconds(progress(0, decode=0.0, limit=0.01, prefill=0.009), RESERVED) == 0
    assert top_up_seconds(progress(64, decode=5.0, limit=5.0), RESERVED) == 0


def test_a_starting_limit_pays_for_the_prompt_and_every_step_at_the_decoder_s_recent_pace_when_slower():
    whole = RESERVED.prefill_seconds + RESERVED.steps * RESERVED.step_seconds
    assert starting_top_up(whole, RESERVED, DecoderPace.unknown()) == 0
    assert starting_top_up(whole, RESERVED, DecoderPace(prompt_seconds=0.05, step_seconds=0.005)) == 0  # faster
    # The decoder's recent pace: the prompt in 0.4 s and 40 ms a step, four times what was reserved.
    slow = DecoderPace(prompt_seconds=0.4, step_seconds=0.04)
    assert starting_top_up(whole, RESERVED, slow) == pytest.approx(0.4 + RESERVED.steps * 0.04 - whole)
    # A limit the stages before the decoder used up (negative) gets all that is reserved for the decoder.
    assert starting_top_up(-0.2, RESERVED, DecoderPace.unknown()) == pytest.approx(whole + 0.2)
