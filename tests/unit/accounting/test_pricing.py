import pytest

from lynx.accounting.clock import StageClock
from lynx.accounting.pricing import (
    GATEWAY_TAIL_SECONDS, NOTHING_YET, STAGES, CostSettings, DecoderUse, RemoteCall, RequestTimes, SoloDecoder,
    attribute_costs, cost_span_attributes, decoder_seconds_left, worst_case_cost,
)
from lynx.accounting.shares import StepCostModel

RATES = CostSettings(gateway_per_hour=36, tokenizer_per_hour=72, retriever_per_hour=108, decoder_per_hour=360)
DECODER = DecoderUse(wall_seconds=1.9, prefill_seconds=0.5, decode_seconds=0.4, resident_seconds=1.85,
                     engine_busy_seconds=1.2)


def times(**overrides) -> RequestTimes:
    fields = dict(wall_seconds=2.0, gateway_seconds=0.02, tokenize=RemoteCall(0.01, 0.02),
                  retrieve=RemoteCall(0.05, 0.06), decoder=DECODER)
    fields.update(overrides)
    return RequestTimes(**fields)


def test_each_stage_is_its_seconds_times_its_tiers_rate():
    cost = attribute_costs(times(), RATES)
    assert cost.stages["tokenize"] == pytest.approx(0.01 * 72 / 3600)
    assert cost.stages["retrieve"] == pytest.approx(0.05 * 108 / 3600)
    assert cost.stages["prefill"] == pytest.approx(0.5 * 0.1)
    assert cost.stages["decode"] == pytest.approx(0.4 * 0.1)
    assert cost.stages["other"] == pytest.approx(0.02 * 0.01)
    assert set(cost.stages) == set(STAGES)
    assert cost.total == pytest.approx(sum(cost.stages.values()), rel=1e-12)


def test_span_attributes_name_every_stage():
    attributes = cost_span_attributes(attribute_costs(times(), RATES))
    assert {f"lynx.cost.stage.{s}.eur" for s in STAGES} < set(attributes)
    assert attributes["lynx.cost.currency"] == "EUR"


def test_rates_must_not_be_negative():
    with pytest.raises(ValueError):
        CostSettings(decoder_per_hour=-1)


SOLO = SoloDecoder(prefill_seconds_per_token=1e-3, step=StepCostModel(0.003, 0.001, 3e-6), margin=3.0)


def test_the_decoder_limit_is_what_the_reservation_leaves_after_the_stages_so_far_and_the_gateways_tail():
    so_far = times(decoder=DecoderUse(0.0))
    reserved = 0.2
    used = attribute_costs(so_far, RATES).total
    limit = decoder_seconds_left(reserved, so_far, RATES)
    assert limit == pytest.approx((reserved - used - GATEWAY_TAIL_SECONDS * 0.01) / 0.1)
    # Whatever a decoder spends within it, with the tail, the request costs no more than it reserved.
    charged = attribute_costs(times(gateway_seconds=0.02 + GATEWAY_TAIL_SECONDS,
                                    decoder=DecoderUse(1.0, prefill_seconds=limit / 4, decode_seconds=limit * 3 / 4)),
                              RATES).total
    assert charged == pytest.approx(reserved, rel=1e-12)


def test_the_limit_of_a_worst_case_reserved_is_its_decoder_estimate_less_what_was_used_since():
    """The limit and the worst case agree: reserved at ``so_far``, the decoder gets the estimate's own seconds, less
    the gateway's time spent after the estimate (waiting for a lease, say) and its tail."""
    so_far = times(decoder=DecoderUse(0.0))
    reserved = worst_case_cost(so_far, 300, 64, SOLO, RATES)
    estimate = SOLO.prefill_seconds(300) + SOLO.decode_seconds(300, 64)
    assert decoder_seconds_left(reserved, so_far, RATES) == pytest.approx(
        estimate - GATEWAY_TAIL_SECONDS * 0.01 / 0.1)
    waited = times(gateway_seconds=0.02 + 1.5, decoder=DecoderUse(0.0))
    assert decoder_seconds_left(reserved, waited, RATES) == pytest.approx(
        estimate - (1.5 + GATEWAY_TAIL_SECONDS) * 0.01 / 0.1)


def test_a_reservation_used_up_before_the_decoder_leaves_nothing_and_a_free_decoder_needs_no_limit():
    reserved = worst_case_cost(NOTHING_YET, 1, 1, SOLO, RATES)
    assert decoder_seconds_left(reserved, times(gateway_seconds=60.0, decoder=DecoderUse(0.0)), RATES) < 0
    free = CostSettings(decoder_per_hour=0)
    assert decoder_seconds_left(1.0, times(decoder=DecoderUse(0.0)), free) is None


def test_the_clock_counts_a_running_stage_so_far_and_only_stopped_ones_in_its_seconds():
    clock = StageClock()
    with clock.stage("gateway"):
        pass
    stopped = clock.seconds["gateway"]
    with clock.stage("gateway"):
        inner = clock.seconds_so_far("gateway")
        assert clock.seconds["gateway"] == stopped < inner <= stopped + clock.elapsed()
        assert clock.seconds_so_far("decoder") == 0.0
    assert clock.seconds_so_far("gateway") == clock.seconds["gateway"] >= inner
