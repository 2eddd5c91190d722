import pytest

from lynx.telemetry.cost import (
    STAGES, CostSettings, RemoteCall, RequestTimes, attribute_costs, cost_span_attributes, identity_violations,
)

RATES = CostSettings(gateway_per_hour=36, tokenizer_per_hour=72, retriever_per_hour=108, decoder_per_hour=360)


def times(**overrides) -> RequestTimes:
    fields = dict(wall_seconds=2.0, tokenize=RemoteCall(0.01, 0.02), retrieve=RemoteCall(0.05, 0.06),
                  decoder_wall_seconds=1.9, prefill_seconds=0.5, decode_seconds=0.4)
    fields.update(overrides)
    return RequestTimes(**fields)


def test_each_stage_is_its_seconds_times_its_tiers_rate():
    cost = attribute_costs(times(), RATES)
    assert cost.stages["tokenize"] == pytest.approx(0.01 * 72 / 3600)
    assert cost.stages["retrieve"] == pytest.approx(0.05 * 108 / 3600)
    assert cost.stages["prefill"] == pytest.approx(0.5 * 0.1)
    assert cost.stages["decode"] == pytest.approx(0.4 * 0.1)
    assert cost.stages["other"] == pytest.approx((2.0 - 0.02 - 0.06 - 1.9) * 0.01)
    assert set(cost.stages) == set(STAGES)


def test_stages_add_up_to_the_total_and_no_violation_is_reported():
    cost = attribute_costs(times(), RATES)
    assert sum(cost.stages.values()) == pytest.approx(cost.total, rel=1e-12)
    assert identity_violations(times(), cost, RATES) == []


def test_a_stage_timed_twice_makes_other_negative():
    overlapping = times(decoder_wall_seconds=2.5)
    assert "stage_counted_twice" in identity_violations(overlapping, attribute_costs(overlapping, RATES), RATES)


def test_a_missing_timer_leaves_too_much_in_other():
    untimed = times(wall_seconds=5.0)
    assert "stage_missing_timer" in identity_violations(untimed, attribute_costs(untimed, RATES), RATES)


def test_a_service_claiming_more_than_the_call_took_is_caught():
    greedy = times(tokenize=RemoteCall(0.5, 0.02))
    assert "busy_exceeds_wall" in identity_violations(greedy, attribute_costs(greedy, RATES), RATES)


def test_a_broken_total_is_caught():
    cost = attribute_costs(times(), RATES)
    tampered = type(cost)(cost.currency, cost.stages, cost.total * 1.01)
    assert identity_violations(times(), tampered, RATES) == ["sum_mismatch"]


def test_span_attributes_name_every_stage():
    attributes = cost_span_attributes(attribute_costs(times(), RATES))
    assert {f"lynx.cost.stage.{s}.eur" for s in STAGES} < set(attributes)
    assert attributes["lynx.cost.currency"] == "EUR"


def test_rates_must_not_be_negative():
    with pytest.raises(ValueError):
        CostSettings(decoder_per_hour=-1)
