"""The ledger with the real StageClock and the real metric registry: planted timing bugs move the counter."""

from __future__ import annotations

import json
import gc
import logging
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from lynx.accounting.clock import StageClock
from lynx.accounting.identity import reasons
from lynx.accounting.ledger import Charge, Ledger
from lynx.accounting.pricing import NO_CALL, CostSettings, DecoderUse, RemoteCall, RequestTimes
from lynx.telemetry.logs import JsonFormatter
from lynx.telemetry.metrics import OUTCOMES

LEDGER = Ledger(CostSettings())
TRACER = TracerProvider().get_tracer("test")


def violations(reason: str) -> float:
    return REGISTRY.get_sample_value("lynx_cost_identity_violations_total", {"reason": reason}) or 0.0


def tenant_spend(tenant: str, outcome: str) -> float:
    labels = {"tenant": tenant, "model_name": "m", "outcome": outcome}
    return REGISTRY.get_sample_value("lynx_tenant_cost_eur_total", labels) or 0.0


def charged_requests(model: str, outcome: str) -> float | None:
    return REGISTRY.get_sample_value("lynx_charged_requests_total", {"model_name": model, "outcome": outcome})


def model_errors(model: str) -> float | None:
    return REGISTRY.get_sample_value("lynx_charged_request_errors_total", {"model_name": model})


def charge_timed_by(clock: StageClock, tenant: str = "t", outcome: str = "completed", client_refusal: bool = False):
    times = RequestTimes(wall_seconds=clock.elapsed(), gateway_seconds=clock.seconds["gateway"],
                         tokenize=RemoteCall(0.0, clock.seconds["tokenize"]), retrieve=NO_CALL,
                         decoder=DecoderUse(wall_seconds=clock.seconds["decoder"]),
                         interrupted_seconds=clock.interrupted_seconds())
    span = TRACER.start_span("request")
    settlement = LEDGER.charge(Charge(tenant=tenant, model="m", outcome=outcome, times=times, prompt_tokens=3,
                                      completion_tokens=2, finish_reason="stop", trace_id="ab" * 16,
                                      request_id="r1", client_refusal=client_refusal), span)
    return settlement, span


def test_a_request_timed_stage_by_stage_passes():
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.002)
    with clock.stage("tokenize"):
        time.sleep(0.002)
    with clock.stage("decoder"):
        time.sleep(0.005)
    settlement, _ = charge_timed_by(clock)
    assert settlement.identity_ok, settlement.violations


def test_a_planted_double_counted_stage_moves_the_violation_counter():
    before = violations("stage_counted_twice")
    clock = StageClock()
    with clock.stage("gateway"), clock.stage("tokenize"):  # the tokenizer call is timed inside the gateway's own time
        time.sleep(0.03)
    settlement, span = charge_timed_by(clock)
    assert reasons(settlement.violations) == ["stage_counted_twice"]
    assert violations("stage_counted_twice") == before + 1
    assert span.attributes["lynx.cost.identity_ok"] is False


def test_a_planted_untimed_stage_moves_the_violation_counter_and_logs_the_violation(caplog):
    before = violations("stage_missing_timer")
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.002)
    untimed_from = time.perf_counter()
    time.sleep(0.05)  # work no stage timer covers
    untimed = time.perf_counter() - untimed_from  # the test's own clock
    with caplog.at_level(logging.INFO, logger="lynx.ledger"):
        settlement, _ = charge_timed_by(clock)
    assert reasons(settlement.violations) == ["stage_missing_timer"]
    assert violations("stage_missing_timer") == before + 1
    (record,) = [r for r in caplog.records if r.getMessage() == "cost_identity_violation"]
    event = json.loads(JsonFormatter("lynx-gateway").format(record))
    assert (event["reason"], event["stage"], event["trace_id"]) == ("stage_missing_timer", "other", "ab" * 16)
    assert event["level"] == "warning" and event["tenant"] == "t" and event["request_id"] == "r1"
    # The two figures: the stopwatch and the timers differ by the untimed sleep the test measured itself.
    assert event["measured_seconds"] - event["accounted_seconds"] >= untimed > event["tolerance_seconds"]


def test_tokens_are_counted_per_tenant():
    def tokens(tenant: str, kind: str) -> float:
        labels = {"tenant": tenant, "kind": kind, "model_name": "m", "outcome": "completed"}
        return REGISTRY.get_sample_value("lynx_tokens_total", labels) or 0.0

    before = {tenant: (tokens(tenant, "prompt"), tokens(tenant, "completion")) for tenant in ("ann", "bob")}
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.001)
    charge_timed_by(clock, tenant="ann")  # 3 prompt tokens, 2 completion tokens
    assert (tokens("ann", "prompt"), tokens("ann", "completion")) == (before["ann"][0] + 3, before["ann"][1] + 2)
    assert (tokens("bob", "prompt"), tokens("bob", "completion")) == before["bob"]


def test_a_gap_stretched_by_a_full_garbage_collection_is_no_missing_timer():
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.002)
    began = time.perf_counter()
    while time.perf_counter() - began < 0.05:  # what stretches the gap is the process stopping for the collector
        gc.collect()
    assert clock.interrupted_seconds() >= 0.05
    with clock.stage("gateway"):
        time.sleep(0.002)
    settlement, _ = charge_timed_by(clock)
    assert settlement.identity_ok, settlement.violations


@pytest.mark.parametrize("outcome", ["completed", "client_closed", "failed", "deadline"])
def test_every_outcome_is_charged_to_the_tenant_under_its_label(outcome):
    before = tenant_spend("acme", outcome)
    requests_before = charged_requests("m", outcome) or 0.0
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.001)
    settlement, span = charge_timed_by(clock, tenant="acme", outcome=outcome)
    assert tenant_spend("acme", outcome) - before == pytest.approx(settlement.cost.total, rel=1e-9)
    assert charged_requests("m", outcome) == requests_before + 1
    assert span.attributes["lynx.outcome"] == outcome
    assert span.attributes["lynx.cost.eur"] == settlement.cost.total


def test_a_served_model_counts_its_requests_from_zero_before_the_first_one():
    """The per-model error alert reads a rate: a model's first failure must be a step up from 0, not a new series."""
    assert charged_requests("served-model", "failed") is None and model_errors("served-model") is None
    Ledger(CostSettings()).serves("served-model")
    assert [charged_requests("served-model", outcome) for outcome in OUTCOMES] == [0.0] * len(OUTCOMES)
    assert model_errors("served-model") == 0.0


@pytest.mark.parametrize(("outcome", "client_refusal", "is_error"), [
    ("failed", False, True), ("deadline", False, True),
    ("failed", True, False),  # a 4xx after charging began (the budget had no room for its worst case): the client's
    ("completed", False, False), ("client_closed", False, False),
])
def test_a_model_error_is_a_failure_on_lynx_s_side_or_a_deadline(outcome, client_refusal, is_error):
    before = model_errors("m") or 0.0
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.001)
    charge_timed_by(clock, outcome=outcome, client_refusal=client_refusal)
    assert model_errors("m") == before + is_error


def test_an_unknown_outcome_is_refused():
    clock = StageClock()
    with pytest.raises(ValueError):
        charge_timed_by(clock, outcome="vanished")


def test_the_log_event_names_the_request_and_its_cost(caplog):
    clock = StageClock()
    with clock.stage("gateway"):
        time.sleep(0.001)
    with caplog.at_level(logging.INFO, logger="lynx.ledger"):
        settlement, _ = charge_timed_by(clock, tenant="acme", outcome="client_closed")
    (record,) = [r for r in caplog.records if r.name == "lynx.ledger" and r.getMessage() == "request_failed"]
    event = json.loads(JsonFormatter("lynx-gateway").format(record))
    assert event["tenant"] == "acme" and event["outcome"] == "client_closed" and event["request_id"] == "r1"
    assert event["trace_id"] == "ab" * 16 and event["prompt_tokens"] == 3 and event["completion_tokens"] == 2
    assert event["cost_eur"] == settlement.cost.total
