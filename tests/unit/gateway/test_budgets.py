import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from pydantic import ValidationError

from lynx.accounting.clock import StageClock
from lynx.accounting.ledger import Ledger
from lynx.accounting.pricing import (
    NOTHING_YET, CostSettings, DecoderUse, RemoteCall, RequestTimes, SoloDecoder, attribute_costs, worst_case_cost,
)
from lynx.accounting.shares import StepCostSettings, step_shares
from lynx.contracts.budgets import BudgetDecisions, TenantDecision
from lynx.service.errors import LynxError
from lynx.gateway.app import cheaper_route
from lynx.gateway.budgets import Budgets, Estimate, RecentCharges, affordable_estimate
from lynx.gateway.orchestrator import Job, Pipeline, RequestAccount
from lynx.gateway.settings import GatewaySettings
from lynx.accounting.tenants import Tenant
from lynx.gateway.upstream import Upstreams
from lynx.service.files import write_atomically
from lynx.telemetry.logs import JsonFormatter

RATES = CostSettings()
STEP = StepCostSettings().step_cost()
SOLO = SoloDecoder(GatewaySettings().prefill_seconds_per_token, STEP)
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def solo_request_cost(prompt_tokens: int, max_tokens: int, so_far: RequestTimes = NOTHING_YET) -> float:
    """What the decoder charges a request that runs alone, step by step through its own share rule."""
    decode = 0.0
    for step in range(max_tokens - 1):
        context = [prompt_tokens + step]
        decode += step_shares(STEP.predict(context), context, STEP)[0]
    prefill = STEP.fixed_seconds + SOLO.prefill_seconds_per_token * prompt_tokens  # one model call
    times = RequestTimes(wall_seconds=0.0, gateway_seconds=so_far.gateway_seconds, tokenize=so_far.tokenize,
                         retrieve=so_far.retrieve, decoder=DecoderUse(0.0, prefill, decode))
    return attribute_costs(times, RATES).total


@pytest.mark.parametrize(("prompt_tokens", "max_tokens"), [(1, 1), (12, 16), (64, 256), (900, 1024), (1800, 240)])
def test_the_worst_case_covers_a_request_decoded_alone(prompt_tokens, max_tokens):
    so_far = RequestTimes(wall_seconds=0.2, gateway_seconds=0.003, tokenize=RemoteCall(0.004, 0.005),
                          retrieve=RemoteCall(0.03, 0.04), decoder=DecoderUse(0.0))
    real = solo_request_cost(prompt_tokens, max_tokens, so_far)
    exact = worst_case_cost(so_far, prompt_tokens, max_tokens, SOLO, RATES)
    assert exact == pytest.approx(real, rel=1e-9)
    with_margin = SoloDecoder(SOLO.prefill_seconds_per_token, STEP, margin=1.5)
    assert worst_case_cost(so_far, prompt_tokens, max_tokens, with_margin, RATES) >= real


def test_sharing_a_batch_costs_a_short_row_less_than_decoding_alone():
    alone = step_shares(STEP.predict([300]), [300], STEP)[0]
    batch = [300, 64, 64, 64]
    assert step_shares(STEP.predict(batch), batch, STEP)[0] < alone


def affordable_max_tokens(ceiling_eur: float | None, max_tokens: int) -> int:
    return affordable_estimate(ceiling_eur, NOTHING_YET, 40, max_tokens, SOLO, RATES).max_tokens


def test_the_ceiling_lowers_max_tokens_to_what_it_affords():
    ceiling = worst_case_cost(NOTHING_YET, 40, 100, SOLO, RATES)
    assert affordable_max_tokens(ceiling, 512) == 100
    assert affordable_max_tokens(ceiling * 0.999, 512) == 99
    assert affordable_max_tokens(ceiling, 30) == 30
    assert affordable_max_tokens(None, 512) == 512
    assert affordable_max_tokens(1e-12, 512) == 1  # always at least one token
    assert affordable_max_tokens(1e-12, 1) == 1


@pytest.mark.parametrize("ceiling_eur", [None, 1e-12, 1e-5, 1e-4, 1.0])
def test_the_estimate_the_search_returns_is_the_worst_case_at_the_max_tokens_it_chose(ceiling_eur):
    estimate = affordable_estimate(ceiling_eur, NOTHING_YET, 40, 512, SOLO, RATES)
    assert (estimate.prompt_tokens, estimate.eur) == (40, worst_case_cost(NOTHING_YET, 40, estimate.max_tokens, SOLO,
                                                                          RATES))
    if ceiling_eur is not None and estimate.max_tokens > 1:
        assert estimate.eur <= ceiling_eur


def decision(tenant: str = "acme", **overrides) -> TenantDecision:
    fields = dict(tenant=tenant, state="Ok", cap_eur=1.0, spent_eur=0.4, remaining_eur=0.6,
                  day_started_at=NOW.replace(hour=0), resets_at=NOW.replace(hour=0) + timedelta(days=1),
                  spend_as_of=NOW - timedelta(seconds=10), reason="Within budget.")
    fields.update(overrides)
    return TenantDecision(**fields)


def publish(path, *decisions: TenantDecision, unknown: str = "open") -> None:
    body = BudgetDecisions(generated_at=NOW, source="local", tenants={d.tenant: d for d in decisions},
                           unknown_tenants=unknown)
    write_atomically(path, body.model_dump_json())


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


def estimate(eur: float) -> Estimate:
    """A request whose worst case is ``eur``: the decoder at a rate that makes 1 s cost 1 EUR."""
    rates = CostSettings(decoder_per_hour=3600)
    # One prompt token, one output token: the prefill only, its model call's fixed part taken out of its token's.
    solo = SoloDecoder(eur - STEP.fixed_seconds, STEP)
    return Estimate.worst_case(NOTHING_YET, 1, 1, solo, rates)


@pytest.fixture
def budgets(tmp_path):
    return Budgets(tmp_path / "decisions.json", now=FakeClock())


def refusal(call) -> LynxError:
    with pytest.raises(LynxError) as caught:
        call()
    assert caught.value.status == 429 and caught.value.code == "insufficient_quota"
    return caught.value


def test_available_is_remaining_less_recent_charges_and_reservations(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision(remaining_eur=0.6))
    first, second = budgets.admit("acme"), budgets.admit("acme")
    asyncio.run(first.reserve(estimate(0.25)))
    asyncio.run(second.reserve(estimate(0.25)))
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.1)
    error = refusal(lambda: asyncio.run(budgets.admit("acme").reserve(estimate(0.2))))
    assert "0.2 EUR" in error.message and "0.1 EUR" in error.message  # what it could cost, what is left
    assert "lower max_tokens" in error.message.lower() and "raise" in error.message
    assert int(error.headers["Retry-After"]) == 9 * 3600  # 15:00 UTC to the next midnight
    first.settle(0.05)  # the charge replaces the reservation
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.3)
    second.settle(0.07)
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.48)
    assert budgets.reserved["acme"] == 0.0


def test_charges_before_spend_as_of_are_in_the_spend_already(budgets, tmp_path):
    path = tmp_path / "decisions.json"
    publish(path, decision(remaining_eur=0.6, spent_eur=0.4))
    hold = budgets.admit("acme")
    asyncio.run(hold.reserve(estimate(0.1)))
    hold.settle(0.1)  # charged at NOW, after spend_as_of (NOW - 10 s): not in the decision's spend
    assert budgets.spent("acme", budgets.decision("acme")) == pytest.approx(0.5)
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.5)
    publish(path, decision(remaining_eur=0.5, spent_eur=0.5, spend_as_of=NOW + timedelta(seconds=1)))
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.5)  # counted once, not twice


def test_a_request_that_fails_before_reserving_is_still_counted(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision(remaining_eur=0.6))
    budgets.admit("acme").settle(0.01)
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.59)


def test_blocked_paused_and_exhausted_tenants_are_refused_before_any_call(budgets, tmp_path):
    path = tmp_path / "decisions.json"
    publish(path, decision("blocked", state="Blocked", remaining_eur=0.0, spent_eur=1.01,
                           reason="Spent 1.01 EUR of its 1 EUR daily cap."),
            decision("paused", state="Paused", remaining_eur=0.0, reason="Paused by alice: invoice overdue."),
            decision("spent", remaining_eur=0.01))
    blocked = refusal(lambda: budgets.admit("blocked"))
    assert "1.01 EUR" in blocked.message and "2026-11-25T00:00:00Z" in blocked.message
    paused = refusal(lambda: budgets.admit("paused"))
    assert "invoice overdue" in paused.message
    budgets.admit("spent").settle(0.02)  # this gateway's own charge since spend_as_of used up the rest
    refusal(lambda: budgets.admit("spent"))
    assert [REGISTRY.get_sample_value("lynx_budget_refused_requests_total", {"tenant": t, "reason": r})
            for t, r in (("blocked", "blocked"), ("paused", "paused"), ("spent", "insufficient"))] == [1, 1, 1]


def test_a_budgeted_tenants_refusals_read_zero_before_the_first(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision("fresh"))
    assert budgets.decision("fresh") is not None
    assert [REGISTRY.get_sample_value("lynx_budget_refused_requests_total", {"tenant": "fresh", "reason": reason})
            for reason in ("paused", "blocked", "insufficient")] == [0, 0, 0]


def test_tenants_without_a_budget_follow_unknown_tenants(budgets, tmp_path):
    path = tmp_path / "decisions.json"
    asyncio.run(budgets.admit("stranger").reserve(estimate(100.0)))  # no file: no budgets, served
    publish(path, decision())
    budgets.admit("stranger")
    publish(path, decision(), unknown="closed")
    error = refusal(lambda: budgets.admit("stranger"))
    assert "no daily budget" in error.message and "Retry-After" not in error.headers


def test_the_decisions_file_is_reread_when_it_changes(budgets, tmp_path):
    path = tmp_path / "decisions.json"
    publish(path, decision(state="Blocked", remaining_eur=0.0))
    refusal(lambda: budgets.admit("acme"))
    publish(path, decision(state="Ok", cap_eur=2.0, remaining_eur=1.6, reason="A raise of 1 EUR is in force."))
    budgets.admit("acme")
    path.write_text("{not json")  # a broken file keeps the last decisions, and says so
    assert budgets.decision("acme").cap_eur == 2.0
    assert REGISTRY.get_sample_value("lynx_watched_file_stale", {"file": "budget_decisions"}) == 1
    path.unlink()
    assert budgets.decision("acme") is None
    assert REGISTRY.get_sample_value("lynx_watched_file_stale", {"file": "budget_decisions"}) == 0


def test_a_settled_hold_is_released_once(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision(remaining_eur=0.6))
    hold = budgets.admit("acme")
    asyncio.run(hold.reserve(estimate(0.3)))
    hold.settle(0.1)
    hold.settle(0.1)
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.5)


def test_recent_charges_merge_when_full_without_losing_any():
    charges = RecentCharges(capacity=4)
    for second in range(10):
        charges.add(float(second), 1.0)
    assert len(charges.entries) == 4
    assert charges.since(-1.0) == 10.0
    for moment in range(10):  # merged entries count at least as long as their parts
        assert charges.since(float(moment)) >= 9 - moment


def test_the_ledger_entry_settles_the_hold_even_when_charging_fails(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision(remaining_eur=0.6))
    tracer = TracerProvider().get_tracer("test")
    job = Job(tenant=Tenant("acme"), operation="chat", max_tokens=8, temperature=0.0, top_p=1.0, stop=[], seed=None,
              clock=StageClock())
    charged = RequestAccount(Ledger(RATES), "m", job, tracer.start_span("ok"), budgets.admit("acme"))
    asyncio.run(charged.hold.reserve(estimate(0.2)))
    settlement = charged.settle("completed", DecoderUse(0.0), 0, "stop")
    assert budgets.reserved["acme"] == 0.0
    assert budgets.available("acme", budgets.decision("acme")) == pytest.approx(0.6 - settlement.cost.total)
    broken = RequestAccount(Ledger(RATES), "m", job, tracer.start_span("broken"), budgets.admit("acme"))
    asyncio.run(broken.hold.reserve(estimate(0.2)))
    with pytest.raises(ValueError, match="unknown outcome"):
        broken.settle("no-such-outcome", DecoderUse(0.0), 0, None)
    assert budgets.reserved["acme"] == 0.0


def test_a_tenant_near_its_cap_is_routed_to_the_cheaper_decoder_when_one_is_deployed(budgets, tmp_path):
    publish(tmp_path / "decisions.json", decision("near", state="Warning", cheaper_near_cap=True),
            decision("far", cheaper_near_cap=True), decision("unasked", state="Warning"))
    settings = GatewaySettings(cheaper_decoder_url="http://127.0.0.1:9", cheaper_model_name="cheap",
                               cheaper_decoder_per_hour=0.1)
    cheaper = cheaper_route(settings, RATES, TracerProvider())
    assert cheaper.model == "cheap" and cheaper.ledger.rates.decoder_per_hour == 0.1
    tracer = TracerProvider().get_tracer("test")
    pipeline = Pipeline(settings, Upstreams(None, None, None), Ledger(RATES), tracer, SOLO, cheaper)
    assert [pipeline.route(budgets.admit(t)).model for t in ("near", "far", "unasked")] == [
        "cheap", settings.model_name, settings.model_name]
    not_deployed = Pipeline(GatewaySettings(), Upstreams(None, None, None), Ledger(RATES), tracer, SOLO)
    assert not_deployed.route(budgets.admit("near")).model == settings.model_name
    asyncio.run(cheaper.decoders.aclose())
    with pytest.raises(ValidationError, match="go together"):
        GatewaySettings(cheaper_decoder_url="http://127.0.0.1:9")


def test_every_refusal_logs_the_tenant_the_reason_and_when_it_was_refused(budgets, tmp_path, caplog):
    publish(tmp_path / "decisions.json", decision("paused", state="Paused", remaining_eur=0.0, reason="Paused by bo."),
            decision("acme", remaining_eur=0.1))
    with caplog.at_level(logging.INFO, logger="lynx.gateway.budgets"):
        paused = refusal(lambda: budgets.admit("paused"))
        too_big = refusal(lambda: asyncio.run(budgets.admit("acme").reserve(estimate(0.2))))
    events = [json.loads(JsonFormatter("lynx-gateway").format(r)) for r in caplog.records
              if r.getMessage() == "request_refused"]
    assert [(e["tenant"], e["reason"], e["phase"], e["status"], e["code"], e["message"]) for e in events] == [
        ("paused", "paused", "admission", 429, "insufficient_quota", paused.message),
        ("acme", "insufficient", "reservation", 429, "insufficient_quota", too_big.message)]
    assert events[0]["event_id"] != events[1]["event_id"]
