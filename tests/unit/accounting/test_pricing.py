import pytest

from lynx.accounting.pricing import (
    STAGES, CostSettings, DecoderUse, RemoteCall, RequestTimes, attribute_costs, cost_span_attributes,
)

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
