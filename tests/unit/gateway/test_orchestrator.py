"""The request path's own logic (lynx.gateway.orchestrator): the prompt it builds, the worst case it reserves, the
times it charges, how it names an outcome, and the errors it answers with. The stream against a real decoder is
tested in tests/integration."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from lynx.accounting.identity import identity_violations, reasons
from lynx.accounting.ledger import Ledger
from lynx.accounting.pricing import (
    NOTHING_YET, NO_CALL, CostSettings, DecoderUse, RemoteCall, RequestTimes, SoloDecoder, worst_case_cost,
)
from lynx.accounting.shares import StepCostSettings
from lynx.contracts.budgets import BudgetDecisions, TenantDecision
from lynx.contracts.decoder import DecoderTimings, StreamFinished, Usage
from lynx.contracts.limits import MAX_PROMPT_CHARACTERS
from lynx.contracts.retriever import RetrievedPassage
from lynx.contracts.tokenizer import ChatMessage
from lynx.service.errors import CONTEXT_LENGTH_EXCEEDED, LynxError
from lynx.gateway.budgets import Budgets
from lynx.gateway.orchestrator import (
    Job, Pipeline, RequestAccount, deadline_error, describe, failed_call, outcome_of, refused_by_client,
    retrieval_query, stopping_error, with_passages,
)
from lynx.gateway.settings import GatewaySettings
from lynx.accounting.tenants import Tenant
from lynx.gateway.upstream import Upstreams
from lynx_budget.local import write_atomically

PASSAGES = [RetrievedPassage(id="1", source="a.html", text="alpha", score=0.9),
            RetrievedPassage(id="2", source="b.html", text="beta", score=0.8)]
RATES = CostSettings()
SOLO = SoloDecoder(GatewaySettings().prefill_seconds_per_token, StepCostSettings().step_cost())
NOW = datetime.now(UTC)


def message(role: str, content: str) -> ChatMessage:
    return ChatMessage(role=role, content=content)


def test_passages_go_into_a_new_system_message():
    messages = with_passages([message("user", "q")], PASSAGES)
    assert messages[0].role == "system"
    assert "[a.html] alpha" in messages[0].content and "[b.html] beta" in messages[0].content
    assert messages[1] == message("user", "q")


def test_passages_extend_an_existing_system_message():
    messages = with_passages([message("system", "Be brief."), message("user", "q")], PASSAGES)
    assert len(messages) == 2 and messages[0].content.startswith("Be brief.")


def test_no_passages_leaves_the_messages_alone():
    original = [message("user", "q")]
    assert with_passages(original, []) is original


def test_passages_that_would_take_the_prompt_past_what_the_tokenizer_accepts_are_left_out():
    long = RetrievedPassage(id="3", source="c.html", text="g" * 1000, score=0.7)
    question = message("user", "q" * (MAX_PROMPT_CHARACTERS - 1100))  # room for the short passages only
    messages = with_passages([question], [*PASSAGES, long])
    assert "[b.html] beta" in messages[0].content and "c.html" not in messages[0].content
    assert sum(len(m.content) for m in messages) <= MAX_PROMPT_CHARACTERS
    assert with_passages([message("user", "q" * MAX_PROMPT_CHARACTERS)], PASSAGES)[0].role == "user"


def test_the_query_is_the_last_user_message():
    assert retrieval_query([message("user", "first"), message("assistant", "a"), message("user", "second")]) == "second"
    assert retrieval_query([message("system", "s")]) == ""


def test_outcomes_follow_how_the_request_ended():
    def finished(reason: str) -> StreamFinished:
        return StreamFinished(finish_reason=reason, usage=Usage(prompt_tokens=1, completion_tokens=1),
                              timings=DecoderTimings(queue_seconds=0, prefill_seconds=0, decode_seconds=0,
                                                     decode_steps=0, resident_seconds=0, engine_busy_seconds=0))
    assert outcome_of(None, None, finished("stop")) == "completed"
    assert outcome_of(None, None, finished("length")) == "completed"
    assert outcome_of(None, None, finished("deadline")) == "deadline"
    assert outcome_of(None, None, finished("error")) == "failed"
    assert outcome_of(None, None, None) == "failed"
    assert outcome_of(None, LynxError(502, "m", "c"), finished("stop")) == "failed"
    assert outcome_of("client_closed", None, finished("cancelled")) == "client_closed"


@pytest.mark.parametrize("waited, retry_after", [(0.0, "1"), (0.2, "1"), (9.7, "10"), (60.0, "60")])
def test_a_deadline_exceeded_says_when_to_retry_by_how_long_it_waited_for_a_slot(waited, retry_after):
    error = deadline_error(60, waited)
    assert (error.status, error.code, error.type) == (504, "deadline_exceeded", "timeout_error")
    assert error.headers == {"Retry-After": retry_after}
    assert f"retry after {retry_after} s" in error.message and "(60 s)" in error.message


def test_a_failed_call_keeps_the_request_s_stages_adding_up_to_its_stopwatch():
    def times(retrieve: RemoteCall) -> RequestTimes:
        return RequestTimes(wall_seconds=0.5, gateway_seconds=0.1, tokenize=NO_CALL, retrieve=retrieve,
                            decoder=DecoderUse(0.0))
    assert identity_violations(times(failed_call(0.4)), RATES) == []
    assert reasons(identity_violations(times(NO_CALL), RATES)) == ["stage_missing_timer"]


def test_only_a_4xx_is_the_client_s_refusal():
    assert refused_by_client(LynxError(429, "No room in the budget.", "insufficient_quota"))
    assert refused_by_client(LynxError(400, "The prompt is past the context.", CONTEXT_LENGTH_EXCEEDED))
    assert not refused_by_client(LynxError(502, "The decoder failed.", "upstream_error"))
    assert not refused_by_client(stopping_error()) and not refused_by_client(ValueError()) and not refused_by_client(None)


def test_an_error_is_described_by_its_message_and_anything_else_by_its_type_alone():
    assert describe(LynxError(502, "The tokenizer failed.", "upstream_error")) == "The tokenizer failed."
    assert describe(ValueError("a prompt's text")) == "ValueError"


@pytest.fixture
def budgets(tmp_path) -> Budgets:
    decision = TenantDecision(tenant="acme", state="Ok", cap_eur=1.0, spent_eur=0.0, remaining_eur=1.0,
                              day_started_at=NOW - timedelta(hours=1), resets_at=NOW + timedelta(hours=23),
                              spend_as_of=NOW, reason="Within budget.")
    path = tmp_path / "decisions.json"
    write_atomically(path, BudgetDecisions(generated_at=NOW, source="local", tenants={"acme": decision},
                                           unknown_tenants="open").model_dump_json())
    return Budgets(path)


def open_request(budgets: Budgets, prompt_tokens: int, max_tokens: int, max_cost_eur: float | None = None,
                 ) -> tuple[Pipeline, RequestAccount]:
    tracer = TracerProvider().get_tracer("test")
    pipeline = Pipeline(GatewaySettings(), Upstreams(None, None, None), Ledger(RATES), tracer, SOLO)
    job = Job(tenant=Tenant("acme"), operation="chat", max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=[],
              seed=None, messages=[message("user", "q")], max_cost_eur=max_cost_eur)
    account = RequestAccount(pipeline.standard.ledger, "m", job, tracer.start_span("request"), budgets.admit("acme"))
    account.tokenize, account.prompt_tokens = RemoteCall(0.001, 0.002), prompt_tokens
    return pipeline, account


def test_the_model_a_pipeline_serves_counts_its_requests_from_zero():
    settings = GatewaySettings(model_name="counted-from-the-start")
    failed = {"model_name": settings.model_name, "outcome": "failed"}
    assert REGISTRY.get_sample_value("lynx_charged_requests_total", failed) is None
    Pipeline(settings, Upstreams(None, None, None), Ledger(RATES), TracerProvider().get_tracer("test"), SOLO)
    assert REGISTRY.get_sample_value("lynx_charged_requests_total", failed) == 0.0


def test_a_request_without_a_ceiling_reserves_the_worst_case_of_all_its_max_tokens(budgets):
    pipeline, account = open_request(budgets, 40, 512)
    assert asyncio.run(pipeline._reserve(account.job, account, pipeline.standard, 2048)) == 512
    reserved = budgets.reserved["acme"]
    assert reserved == account.span.attributes["lynx.budget.reserved_eur"]
    assert "lynx.budget.max_tokens" not in account.span.attributes
    # It covers the decoder's worst case at 512 tokens, and the tokenizer call and the gateway time it has already had.
    assert reserved > worst_case_cost(NOTHING_YET, 40, 512, SOLO, RATES)


def test_a_cost_ceiling_lowers_max_tokens_to_what_it_affords_and_the_reservation_fits_it(budgets):
    ceiling = worst_case_cost(NOTHING_YET, 40, 100, SOLO, RATES)
    pipeline, account = open_request(budgets, 40, 512, max_cost_eur=ceiling)
    max_tokens = asyncio.run(pipeline._reserve(account.job, account, pipeline.standard, 2048))
    assert 1 <= max_tokens <= 100 and account.span.attributes["lynx.budget.max_tokens"] == max_tokens
    assert budgets.reserved["acme"] <= ceiling
    # One token more would not have fitted, even for a request that had used nothing before its reservation.
    assert worst_case_cost(NOTHING_YET, 40, 101, SOLO, RATES) > ceiling


def test_a_prompt_past_the_decoder_s_context_is_refused_before_anything_is_reserved(budgets):
    pipeline, account = open_request(budgets, 2000, 100)
    with pytest.raises(LynxError) as refused:
        asyncio.run(pipeline._reserve(account.job, account, pipeline.standard, 2048))
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, CONTEXT_LENGTH_EXCEEDED, "messages")
    assert "2100 exceeds the context of 2048" in refused.value.message
    assert budgets.reserved["acme"] == 0.0 and account.hold.reserved is None


def test_the_charge_counts_the_times_the_reservation_saw_and_what_came_after(budgets):
    stopwatch = time.perf_counter()
    pipeline, account = open_request(budgets, 40, 8)
    with account.job.clock.stage("gateway"):
        before = account.times_so_far(DecoderUse(0.0))
    with account.job.clock.stage("gateway"):
        time.sleep(0.01)  # gateway work between the reservation and the charge
    decoder = DecoderUse(wall_seconds=0.0, prefill_seconds=0.0, decode_seconds=0.0)
    settlement = account.settle("completed", decoder, 8, "stop")
    outer = time.perf_counter() - stopwatch
    charged = account.times
    assert charged.tokenize == before.tokenize == RemoteCall(0.001, 0.002) and charged.decoder is decoder
    assert before.wall_seconds < charged.wall_seconds <= outer
    assert charged.gateway_seconds >= before.gateway_seconds + 0.01
    assert settlement.cost.total == pytest.approx(worst_case_cost(charged, 40, 1, SOLO, RATES)
                                                  - worst_case_cost(NOTHING_YET, 40, 1, SOLO, RATES))
    assert account.settle("failed", DecoderUse(1.0), 0, None) is settlement  # one entry, whatever comes later
