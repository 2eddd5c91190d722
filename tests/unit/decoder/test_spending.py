"""Spend limits' forecast: which rows end before the next decode step."""

from __future__ import annotations

import pytest

from lynx.accounting.shares import StepCostModel, step_shares
from lynx.decoder.spending import (
    NO_PACE_YET, NO_PROMPT_PACE_YET, RECENT_CALLS, PromptPace, Recent, RowSpend, StepPace, past_limit,
    limit_wanted, prompt_forecast, rows_past_limit, solo_forecast,
)

MODEL = StepCostModel(fixed_seconds=0.004, per_row_seconds=0.001, per_context_token_seconds=1e-5)


def paces_of(*paces: StepPace) -> Recent[StepPace]:
    recent = Recent(NO_PACE_YET)
    for pace in paces:
        recent.add(pace)
    return recent


def test_a_forecast_is_the_slowest_of_the_recent_calls_and_the_initial_pace_before_any():
    contexts = [100]
    recent = Recent(NO_PACE_YET)
    assert recent.forecast(contexts, MODEL) == pytest.approx(MODEL.predict(contexts))
    recent.add(StepPace(elapsed=0.03, predicted=0.01))
    for _ in range(RECENT_CALLS - 1):
        recent.add(StepPace(elapsed=0.01, predicted=0.01))
    assert recent.forecast(contexts, MODEL) == pytest.approx(3 * MODEL.predict(contexts))
    recent.add(StepPace(elapsed=0.01, predicted=0.01))  # the slow one is no longer recent
    assert recent.forecast(contexts, MODEL) == pytest.approx(MODEL.predict(contexts))


def test_a_step_is_forecast_at_the_pace_the_last_one_ran_against_the_model():
    last = [100, 200]
    pace = StepPace(elapsed=3 * MODEL.predict(last), predicted=MODEL.predict(last))
    assert pace.forecast([300], MODEL) == pytest.approx(3 * MODEL.predict([300]))
    assert NO_PACE_YET.forecast([300], MODEL) == pytest.approx(MODEL.predict([300]))
    assert StepPace(elapsed=0.02, predicted=0.0).forecast([1], MODEL) == 0.02  # a model that predicts nothing


def test_a_row_ends_when_its_forecast_share_would_pass_its_limit_and_one_without_a_limit_never_does():
    pace = StepPace(elapsed=0.02, predicted=0.01)  # the machine runs twice as slow as the model
    paces = paces_of(StepPace(elapsed=0.01, predicted=0.01), pace)
    contexts = [50, 50, 50]
    share = step_shares(pace.forecast(contexts, MODEL), contexts, MODEL)[0]
    share_of_two = step_shares(pace.forecast(contexts[:2], MODEL), contexts[:2], MODEL)[0]
    rows = [RowSpend(50, 1.0, 1.0 + share_of_two * 1.01),  # its share fits, even once the next row has left
            RowSpend(50, 1.0, 1.0 + share * 0.99),  # it does not
            RowSpend(50, 99.0, None)]
    assert rows_past_limit(rows, MODEL, paces) == [1]


def test_rows_that_leave_make_the_others_shares_larger_so_the_forecast_is_made_again():
    """Two rows share the fixed part; once one leaves, the other pays all of it, which its limit no longer covers."""
    pace = Recent(NO_PACE_YET)
    pair = step_shares(MODEL.predict([10, 10]), [10, 10], MODEL)[0]
    alone = MODEL.predict([10])
    rows = [RowSpend(10, 0.0, pair * 0.5), RowSpend(10, 0.0, (pair + alone) / 2)]
    assert pair < rows[1].limit_seconds < alone
    assert rows_past_limit(rows, MODEL, pace) == [0, 1]
    assert rows_past_limit([rows[1], RowSpend(10, 0.0, None)], MODEL, pace) == []


def test_past_limit_compares_spent_plus_forecast_with_the_limit():
    assert not past_limit(1.0, 0.5, 1.5)
    assert past_limit(1.0, 0.50001, 1.5)
    assert not past_limit(1e9, 1e9, None)


def test_a_prompt_is_forecast_at_the_last_prefill_s_seconds_per_token_and_nothing_before_the_first():
    assert PromptPace(0.002).forecast(300) == pytest.approx(0.6)
    assert NO_PROMPT_PACE_YET.forecast(300) == 0.0


def test_a_prompt_must_fit_its_next_call_at_the_slowest_pace_and_all_it_has_left_at_the_median():
    paces = Recent(NO_PROMPT_PACE_YET)
    for seconds_per_token in (0.001, 0.002, 0.008):  # the last: a short prompt's call, its fixed part on few tokens
        paces.add(PromptPace(seconds_per_token))
    assert prompt_forecast(paces, 600, 128) == pytest.approx(600 * 0.002)  # the whole prompt, at the median
    assert prompt_forecast(paces, 150, 128) == pytest.approx(128 * 0.008)  # its next call, at the slowest
    assert prompt_forecast(Recent(NO_PROMPT_PACE_YET), 600, 128) == 0.0


def test_a_new_sequence_s_forecast_for_its_caller_is_its_prompt_at_the_median_pace_and_a_solo_step_at_the_slowest():
    assert solo_forecast([], [], 40, MODEL) == (None, None)  # nothing measured yet: the caller keeps its estimate
    prompts = [PromptPace(0.001), PromptPace(0.004), PromptPace(0.002)]
    steps = [StepPace(elapsed=0.01, predicted=0.01), StepPace(elapsed=0.05, predicted=0.01)]
    prompt, step = solo_forecast(prompts, steps, 40, MODEL)
    assert prompt == pytest.approx(0.002 * 40)
    assert step == pytest.approx(5 * MODEL.predict([40]))


def test_a_held_prompt_asks_for_what_it_spent_its_prompt_left_and_every_decode_step():
    assert limit_wanted(0.3, prompt_seconds_left=1.2, steps=63, step_seconds=0.01) == pytest.approx(0.3 + 1.2 + 0.63)
