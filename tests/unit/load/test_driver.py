import pytest

from lynx.contracts.errors import ErrorBody, ErrorCorrelation, ErrorDetail
from lynx.gateway.schemas import (
    BudgetUse, ChatChunkChoice, ChatCompletionChunk, ChunkDelta, Cost, LynxInfo, Usage,
)
from lynx.tools.load.driver import (
    BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS, LoadSpec, Reading, backoff_seconds, is_streamed, unserved,
)

COST = Cost(currency="EUR", total=3e-6, stages={"decode": 3e-6})
LYNX = LynxInfo(trace_id="t" * 32, request_id="r", cost=COST, cost_identity_ok=True, outcome="completed",
                timings={}, budget=BudgetUse(reserved_eur=1e-5, max_tokens=16, state="unbudgeted", notice=None), passages=[])


def chunk(content: str | None = None, finish_reason: str | None = None, **extra) -> str:
    choices = [] if extra.get("usage") else [
        ChatChunkChoice(index=0, delta=ChunkDelta(content=content), finish_reason=finish_reason)]
    return ChatCompletionChunk(id="c", object="chat.completion.chunk", created=0, model="m", choices=choices,
                               **extra).model_dump_json()


def error_event(code: str, cost: dict | None = None) -> str:
    return ErrorBody(error=ErrorDetail(message="m", type="server_error", code=code),
                     lynx=ErrorCorrelation(cost=cost)).model_dump_json()


def read(*events: str) -> Reading:
    reading = Reading(status=200)
    for at, data in enumerate(events):
        if not reading.event(data, at * 0.1):
            break
    return reading


def test_a_whole_stream_is_ok_with_its_cost_tokens_and_token_times():
    reading = read(chunk(""), chunk("Hel"), chunk("lo"), chunk(finish_reason="stop", lynx=LYNX),
                   chunk(usage=Usage(prompt_tokens=9, completion_tokens=2, total_tokens=11)), "[DONE]")
    record = reading.record(started_at=5.0, tenant="x", stream=True, latency_s=0.6)
    assert record.ok and record.cost_eur == 3e-6 and record.completion_tokens == 2 and record.finish_reason == "stop"
    assert record.ttft_s == pytest.approx(0.1) and record.inter_token_s == pytest.approx((0.1,))


def test_a_stream_without_its_final_chunk_is_malformed():
    reading = read(chunk(""), chunk("Hel"), "[DONE]")
    assert (reading.outcome, reading.error_type) == ("malformed", "incomplete_stream")


def test_a_stream_cut_short_by_its_deadline_says_so_and_one_without_a_whole_answer_has_no_finish_reason():
    cut = read(chunk("Hel"), chunk(finish_reason="deadline", lynx=LYNX), "[DONE]")
    assert cut.record(0.0, "x", True, 1.0).finish_reason == "deadline"
    failed = read(chunk("Hel"), chunk(finish_reason="stop"), error_event("upstream_error"))
    assert failed.record(0.0, "x", True, 1.0).finish_reason is None


def test_an_error_event_is_the_error_it_reports():
    reading = read(chunk(""), chunk("Hel"), error_event("upstream_error", {"total": 2e-6}), "[DONE]")
    assert (reading.outcome, reading.error_type, reading.cost_eur) == ("http_error", "upstream_error", 2e-6)


def test_a_chunk_that_is_not_one_is_malformed():
    assert read(chunk(""), '{"choices": "none"}').outcome == "malformed"


@pytest.mark.parametrize(("content", "outcome", "error_type"), [
    (error_event("queue_full").encode(), "http_error", "queue_full"),
    (b"<html>Bad Gateway</html>", "malformed", "invalid_error_body"),
])
def test_error_statuses(content, outcome, error_type):
    reading = Reading(status=503)
    reading.error_body(content)
    assert (reading.outcome, reading.error_type) == (outcome, error_type)


@pytest.mark.parametrize(("requests", "share", "streams"), [(12, 0.5, 6), (10, 0.25, 2), (7, 0.0, 0), (7, 1.0, 7)])
def test_streams_are_spread_by_their_share(requests, share, streams):
    flags = [is_streamed(i, share) for i in range(requests)]
    assert sum(flags) == streams
    assert all(sum(flags[:n]) == int(n * share) for n in range(requests + 1))


def test_a_spec_must_end():
    with pytest.raises(ValueError, match="duration_s, requests or both"):
        LoadSpec(base_url="http://127.0.0.1:1", keys=("k",))
    with pytest.raises(ValueError, match="API key"):
        LoadSpec(base_url="http://127.0.0.1:1", keys=(), requests=1)


def test_backoff_doubles_after_each_unserved_request_up_to_its_cap_and_is_none_after_a_served_one():
    waits = [backoff_seconds(n) for n in range(12)]
    assert waits[0] == 0 and waits[1] == BACKOFF_FIRST_SECONDS and waits[2] == 2 * BACKOFF_FIRST_SECONDS
    assert waits == sorted(waits) and waits[-1] == BACKOFF_MAX_SECONDS


@pytest.mark.parametrize("status, outcome, expected", [
    (None, "reset", True), (503, "http_error", True), (502, "malformed", True),
    (200, "ok", False), (429, "http_error", False), (200, "malformed", False), (None, "timeout", False)])
def test_unserved_means_no_connection_or_a_server_error(status, outcome, expected):
    reading = Reading(status=status)
    if outcome != "ok":
        reading.fail(outcome, "E")
    assert unserved(reading.record(0.0, "t", False, 0.1)) is expected
