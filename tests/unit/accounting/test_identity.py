"""The identity check (lynx.accounting.identity): which plantings it catches, what it says about each, and the
tolerance rule: 0.1 % of the request's cost at the stage's rate, never less than the clocks' floor."""

import pytest

from lynx.accounting.identity import (
    CLOCK_SLACK_SECONDS, DECODER_STAGES, Violation, identity_violations, reasons, tolerance_seconds,
)
from lynx.accounting.pricing import CostSettings, DecoderUse, RemoteCall, RequestTimes, attribute_costs

# RATES in EUR per second: gateway 0.01, tokenizer 0.02, retriever 0.03, decoder 0.1. times(): a request of about
# 0.09 EUR, so 0.1 % of it is 9 ms of the gateway's time, under the 20 ms floor.
from .test_pricing import DECODER, RATES, times

# A minute of decoding: about 6 EUR at RATES, so 0.1 % of it is 0.6 s of the gateway's time.
LONG_DECODER = DecoderUse(wall_seconds=60.5, prefill_seconds=5.0, decode_seconds=55.0, resident_seconds=60.4,
                          engine_busy_seconds=60.2)


def long_times(**overrides) -> RequestTimes:
    return times(**{"wall_seconds": 60.6, "decoder": LONG_DECODER, **overrides})


def test_stages_that_cover_the_request_exactly_pass():
    assert identity_violations(times(), RATES) == []
    assert identity_violations(long_times(), RATES) == []


def test_a_stage_timed_twice_adds_up_to_more_than_the_request_took():
    planted = times(gateway_seconds=0.5)
    (violation,) = identity_violations(planted, RATES)
    assert (violation.reason, violation.stage) == ("stage_counted_twice", "other")
    assert (violation.accounted_seconds, violation.measured_seconds) == (pytest.approx(2.48), 2.0)
    # 0.1 % of this request's cost is more of the gateway's time than the 1 ms floor: the relative tolerance applies.
    relative = 0.001 * attribute_costs(planted, RATES).total / RATES.per_second("gateway")
    assert violation.tolerance_seconds == pytest.approx(relative) and relative > CLOCK_SLACK_SECONDS


def test_time_outside_every_stage_timer_is_caught():
    (violation,) = identity_violations(times(wall_seconds=2.5), RATES)
    assert (violation.reason, violation.stage) == ("stage_missing_timer", "other")
    assert (violation.accounted_seconds, violation.measured_seconds) == (pytest.approx(2.0), 2.5)
    assert violation.tolerance_seconds == RATES.untimed_bound_seconds  # the floor: this request is too cheap


def test_untimed_seconds_while_the_loop_was_interrupted_are_no_missing_timer():
    assert identity_violations(times(wall_seconds=2.5, interrupted_seconds=0.49), RATES) == []
    assert reasons(identity_violations(times(wall_seconds=2.5, interrupted_seconds=0.2), RATES)) == [
        "stage_missing_timer"]


def test_a_gap_within_the_floor_is_clock_noise():
    assert identity_violations(times(wall_seconds=2.0 + RATES.untimed_bound_seconds / 2), RATES) == []


def test_a_gap_past_the_floor_is_within_the_tolerance_of_an_expensive_request_only():
    """50 ms untimed: 2.5 times the floor, a violation for a 0.09 EUR request, 0.01 % of a 6 EUR one's cost."""
    assert reasons(identity_violations(times(wall_seconds=2.05), RATES)) == ["stage_missing_timer"]
    assert identity_violations(long_times(wall_seconds=60.65), RATES) == []
    # ... and past 0.1 % of the expensive request's cost (0.6 s of the gateway's time) it is one again.
    (violation,) = identity_violations(long_times(wall_seconds=61.3), RATES)
    expected = 0.001 * attribute_costs(long_times(wall_seconds=61.3), RATES).total / RATES.per_second("gateway")
    assert violation.tolerance_seconds == pytest.approx(expected) and violation.tolerance_seconds > 0.5


def test_the_tolerance_is_the_larger_of_the_floor_and_the_share_of_the_request_s_cost():
    assert tolerance_seconds(0.02, request_eur=1.0, eur_per_second=0.01, relative=0.001) == pytest.approx(0.1)
    assert tolerance_seconds(0.02, request_eur=0.01, eur_per_second=0.01, relative=0.001) == 0.02
    assert tolerance_seconds(0.02, request_eur=0.0, eur_per_second=0.01, relative=0.001) == 0.02
    assert tolerance_seconds(0.02, request_eur=1.0, eur_per_second=0.0, relative=0.001) == 0.02  # a free tier
    assert tolerance_seconds(0.02, request_eur=1.0, eur_per_second=0.01, relative=0.0) == 0.02


def test_free_tiers_are_checked_at_the_floor():
    free = CostSettings(gateway_per_hour=0, tokenizer_per_hour=0, retriever_per_hour=0, decoder_per_hour=0)
    (violation,) = identity_violations(times(wall_seconds=2.03), free)
    assert violation.tolerance_seconds == free.untimed_bound_seconds


def test_a_service_claiming_more_than_the_call_took_is_caught_with_its_stage():
    (tokenize,) = identity_violations(times(tokenize=RemoteCall(0.5, 0.02)), RATES)
    assert (tokenize.reason, tokenize.stage, tokenize.accounted_seconds, tokenize.measured_seconds) == (
        "busy_exceeds_wall", "tokenize", 0.5, 0.02)
    resident_too_long = DecoderUse(**{**DECODER.__dict__, "resident_seconds": 2.5})
    (decoder,) = identity_violations(times(decoder=resident_too_long), RATES)
    assert (decoder.reason, decoder.stage) == ("busy_exceeds_wall", DECODER_STAGES)
    assert decoder.tolerance_seconds == CLOCK_SLACK_SECONDS  # 0.1 % of 0.09 EUR is 0.9 ms of the decoder's time


def test_each_failing_stage_is_its_own_violation_and_the_request_counts_once_per_check():
    found = identity_violations(times(tokenize=RemoteCall(0.5, 0.02), retrieve=RemoteCall(0.5, 0.06)), RATES)
    assert [(v.reason, v.stage) for v in found] == [("busy_exceeds_wall", "tokenize"),
                                                    ("busy_exceeds_wall", "retrieve")]
    assert reasons(found) == ["busy_exceeds_wall"]


def test_attributed_decoder_seconds_beyond_the_engines_busy_counter_are_caught():
    double_counted = DecoderUse(**{**DECODER.__dict__, "decode_seconds": 0.8, "engine_busy_seconds": 1.0})
    (violation,) = identity_violations(times(decoder=double_counted), RATES)
    assert (violation.reason, violation.stage, violation.accounted_seconds, violation.measured_seconds) == (
        "decoder_exceeds_busy", DECODER_STAGES, pytest.approx(1.3), 1.0)


def test_without_the_decoders_final_report_its_busy_check_is_skipped():
    silent = DecoderUse(wall_seconds=1.9, prefill_seconds=0.5, decode_seconds=0.4)
    assert identity_violations(times(decoder=silent), RATES) == []


def test_a_negative_stage_is_caught_whatever_its_size():
    assert identity_violations(times(tokenize=RemoteCall(-1e-9, 0.02)), RATES) == [
        Violation("negative_stage", "tokenize", -1e-9, 0.0, 0.0)]


@pytest.mark.parametrize("planted", [
    times(gateway_seconds=0.5), times(wall_seconds=2.5), times(tokenize=RemoteCall(0.5, 0.02)),
    times(decoder=DecoderUse(**{**DECODER.__dict__, "resident_seconds": 2.5})),
    times(decoder=DecoderUse(**{**DECODER.__dict__, "decode_seconds": 0.8, "engine_busy_seconds": 1.0})),
    long_times(wall_seconds=61.3), times(retrieve=RemoteCall(-0.01, 0.06)),
])
def test_every_violation_s_two_figures_differ_by_more_than_its_tolerance(planted):
    found = identity_violations(planted, RATES)
    assert found
    for violation in found:
        assert abs(violation.accounted_seconds - violation.measured_seconds) > violation.tolerance_seconds, violation
