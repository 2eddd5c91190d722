"""Admission by deadline: the expected wait, the verdict, the measured mean and its prior."""

from __future__ import annotations

import pytest

from lynx.accounting.shares import StepCostModel
from lynx.decoder.admission import (
    PRIOR_MARGIN, Backlog, Refusal, admission_refusal, expected_wait_seconds, prior_sequence_seconds, weighted_mean,
)


@pytest.mark.parametrize("waiting, free_slots", [(0, 1), (2, 3), (0, 8)])
def test_a_request_that_a_free_slot_will_take_does_not_wait(waiting, free_slots):
    assert expected_wait_seconds(Backlog(waiting, free_slots, slots=8), seconds_per_sequence=10.0) == 0.0


@pytest.mark.parametrize("waiting, free_slots, slots, expected", [
    (0, 0, 8, 10.0 / 8),  # first in line: the next slot to free up
    (15, 0, 8, 16 * 10.0 / 8),  # 16 slots must free up, one every 10/8 s
    (3, 1, 2, 3 * 10.0 / 2),  # one of the three ahead takes the free slot
    (4, 0, 1, 50.0),
])
def test_a_queued_request_waits_for_the_sequences_ahead_of_it_to_leave_their_slots(waiting, free_slots, slots,
                                                                                    expected):
    assert expected_wait_seconds(Backlog(waiting, free_slots, slots), 10.0) == pytest.approx(expected)


def test_a_request_is_admitted_when_its_wait_and_its_own_sequence_fit_its_deadline():
    backlog = Backlog(waiting=7, free_slots=0, slots=8)  # waits 8 x 2 / 8 = 2 s, then 2 s of its own
    assert admission_refusal(backlog, seconds_per_sequence=2.0, remaining_seconds=4.0) is None
    refusal = admission_refusal(backlog, seconds_per_sequence=2.0, remaining_seconds=3.5)
    assert refusal == Refusal(expected_wait_seconds=2.0, expected_finish_seconds=4.0, remaining_seconds=3.5)


def test_a_request_whose_wait_alone_outlasts_its_deadline_is_refused():
    refusal = admission_refusal(Backlog(31, 0, 8), seconds_per_sequence=20.0, remaining_seconds=60.0)
    assert refusal is not None and refusal.expected_wait_seconds == pytest.approx(80.0)


def test_a_free_slot_admits_even_a_request_that_cannot_finish_in_time():
    """It gets what its deadline allows (finish_reason "deadline"), as it did before admission by deadline."""
    assert admission_refusal(Backlog(0, 1, 8), seconds_per_sequence=100.0, remaining_seconds=1.0) is None


@pytest.mark.parametrize("finish, remaining, retry_after", [(4.0, 3.5, 1), (80.5, 60.0, 21), (10.0, 9.999, 1)])
def test_retry_after_is_the_whole_seconds_until_it_would_fit_at_least_one(finish, remaining, retry_after):
    assert Refusal(finish / 2, finish, remaining).retry_after_seconds == retry_after


def test_the_mean_starts_at_the_first_sample_and_moves_a_fifth_of_the_way_to_each_new_one():
    mean = weighted_mean(None, 10.0)
    assert mean == 10.0
    mean = weighted_mean(mean, 20.0)
    assert mean == pytest.approx(12.0)
    for _ in range(30):
        mean = weighted_mean(mean, 4.0)
    assert mean == pytest.approx(4.0, abs=0.01)


def test_the_prior_is_the_requests_own_length_decoded_in_a_full_batch_with_a_margin():
    model = StepCostModel(fixed_seconds=0.003, per_row_seconds=0.001, per_context_token_seconds=1e-6)
    # 64 steps of 8 rows at context 100 + 32: 0.003 + 8 x 0.001 + 8 x 132 x 1e-6 per step
    assert prior_sequence_seconds(model, slots=8, prompt_tokens=100, max_tokens=64) == pytest.approx(
        PRIOR_MARGIN * 64 * (0.003 + 0.008 + 8 * 132e-6))
    assert prior_sequence_seconds(model, 8, 100, 128) > prior_sequence_seconds(model, 8, 100, 64)
    assert prior_sequence_seconds(model, 8, 100, 64) > prior_sequence_seconds(model, 4, 100, 64)
