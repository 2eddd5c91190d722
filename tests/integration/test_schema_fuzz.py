"""Schemathesis against the running gateway's own OpenAPI schema: no 5xx, and every answer one the schema declares
(status, content type, body; each event of a stream too).

Cases come from schemathesis's strategies under hypothesis's ``@given`` (its pytest loader ``from_fixture`` does not
run under pytest 9.2). Positive cases ask for the served model, in one run streamed and in another not, so that real
completions of both kinds are checked against their declared 200 bodies whatever hypothesis draws; and for at most a
few tokens, so that the runs take about a minute together on two cores.

Every answer also carries its request id and trace id (``X-Request-ID``, ``X-Lynx-Trace-Id``, and the body's ``lynx``
ids on errors). Beyond what the schema describes, a property test sends bodies up to the size limit (long, deeply nested,
odd unicode, every field at and past its bound) over one keep-alive connection: no 5xx, the ids on every answer, and
the connection serving the next request after each.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from lynx.contracts.limits import (
    MAX_MESSAGES, MAX_PROMPT_CHARACTERS, MAX_QUERY_CHARACTERS, MAX_STOP_SEQUENCES, MAX_TEMPERATURE,
)

from .conftest import MODEL_NAME, Stack

MAX_TOKENS = 4
MAX_BODY_BYTES = 1_000_000


@schemathesis.check
def carries_its_ids(ctx, response, case) -> bool | None:
    """The request and trace ids on every answer; on an error, the same ones in the body's ``lynx`` object."""
    headers = {name.lower(): values[0] for name, values in response.headers.items()}
    assert_ids(response.status_code, headers, response.content)
    return None


def assert_ids(status: int, headers: dict[str, str], content: bytes) -> None:
    request_id, trace_id = headers.get("x-request-id", ""), headers.get("x-lynx-trace-id", "")
    assert request_id and len(trace_id) == 32, f"{status} without its ids: {headers}"
    if status >= 400:
        ids = json.loads(content)["lynx"]
        assert (ids["request_id"], ids["trace_id"]) == (request_id, trace_id), f"{status}: {content[:300]!r}"


# What every response must satisfy: no server error, its ids, and a status, headers, content type and body that the
# schema declares for it.
CONFORMANCE = [checks.not_a_server_error, carries_its_ids, checks.status_code_conformance,
               checks.content_type_conformance, checks.response_headers_conformance, checks.response_schema_conformance]
FUZZ = settings(max_examples=40, deadline=timedelta(seconds=30), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def gateway_schema(stack: Stack) -> schemathesis.BaseSchema:
    # /v1/lynx/usage takes nothing but the key, and reads a Prometheus this stack does not have (503 here):
    # test_budget_enforcement checks it against a real one.
    return schemathesis.openapi.from_url(f"{stack.gateway.url}/openapi.json").exclude(path="/v1/lynx/usage")


@st.composite
def served(draw, cases: st.SearchStrategy, stream: bool) -> schemathesis.Case:
    """A positive case for the served model, streamed or not; never for more than MAX_TOKENS."""
    case = draw(cases)
    if isinstance(case.body, dict):
        case.body.update(model=MODEL_NAME, stream=stream)
        for field in ("max_tokens", "max_completion_tokens"):
            # JSON Schema's integers include integral floats (47263.0), which the gateway takes too.
            if isinstance(case.body.get(field), int | float) and case.body[field] > MAX_TOKENS:
                case.body[field] = draw(st.integers(1, MAX_TOKENS))
    return case


def fuzz(cases: st.SearchStrategy, stack: Stack, extra_checks: list) -> Counter:
    """Runs the checks on every case; returns how many answers of each (status, content type) were checked."""
    answers: Counter = Counter()

    @FUZZ
    @given(cases)
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=stack.headers(), checks=[*CONFORMANCE, *extra_checks], timeout=60)
        answers[response.status_code, response.headers.get("content-type", [""])[0].split(";")[0]] += 1

    run()
    return answers


@pytest.mark.parametrize("stream, content_type", [(False, "application/json"), (True, "text/event-stream")])
def test_valid_requests_get_declared_answers(gateway_schema, stack: Stack, stream: bool, content_type: str):
    answers = fuzz(served(gateway_schema.as_strategy(GenerationMode.POSITIVE), stream), stack, [])
    # Positive evidence that real completions were checked against their declared bodies.
    assert answers[200, content_type], answers


def test_invalid_requests_are_refused_with_declared_errors(gateway_schema, stack: Stack):
    answers = fuzz(gateway_schema.as_strategy(GenerationMode.NEGATIVE), stack, [checks.negative_data_rejection])
    assert answers[400, "application/json"], answers


def test_negative_seed_is_served(stack: Stack):
    """Found by the fuzzing: OpenAI takes any 64-bit seed, and a negative one used to fail in the decoder (502)."""
    response = httpx.post(f"{stack.gateway.url}/v1/completions", headers=stack.headers(), timeout=60, json={
        "model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2, "temperature": 1, "seed": -30283544})
    assert response.status_code == 200, response.text


# --- Bodies the schema does not describe: up to the size limit, deep, odd unicode, every field at and past its bound.
ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=40) | st.sampled_from([
    "\x00", "\ufeff", "\u202e\u2066", "e\u0301" * 50, "\U0001f600" * 30, "<|im_start|>system\n", "<|im_end|>",
    "\ud800", "a\udfff", "\ud83d\ude00", "\uffff", "\U0010ffff"])
UNITS = st.sampled_from(["lynx ", "hello world. ", "x", "\U0001f600", "\u00e9t\u00e9 ", "日本語", "\t\n"])


@st.composite
def long_text(draw) -> str:
    """Text near the limits that matter: the retriever's query, the context, and the prompt's characters."""
    unit = draw(UNITS)
    target = draw(st.sampled_from([1_000, 4_000, MAX_QUERY_CHARACTERS, MAX_QUERY_CHARACTERS + 1, 40_000,
                                   MAX_PROMPT_CHARACTERS, MAX_PROMPT_CHARACTERS + 1]))
    return (unit * (target // len(unit) + 1))[:target]


def nested(depth: int) -> str:
    """JSON ``depth`` arrays deep (encoded by hand: Python's encoder would recurse)."""
    return "[" * depth + "]" * depth


TEXT = st.one_of(long_text(), long_text(), ODD_TEXT)  # long about half the time
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), ODD_TEXT,
                      st.lists(st.integers(), max_size=3), st.dictionaries(ODD_TEXT, st.integers(), max_size=2))
MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "assistant"]),
    "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), min_size=1, max_size=3)})
# A request the gateway serves in full runs for at most a few tokens: max_tokens is small, or a tiny cost ceiling
# lowers it to what the ceiling affords (one token).
CHEAP = 1e-9


def field(valid: st.SearchStrategy | list, beyond: list) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """A field's accepted values (at its bounds included), and values past them or of another type."""
    accepted = st.sampled_from(valid) if isinstance(valid, list) else valid
    return accepted, st.sampled_from(beyond) | ANY_VALUE


CHAT_FIELDS = {
    "messages": field(st.lists(MESSAGE, min_size=1, max_size=4) | st.just([{"role": "user", "content": "hi"}] * MAX_MESSAGES),
                      [[], [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1), [{"role": "tool", "content": "hi"}],
                       [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]]),
    "retrieval_top_k": field([0, 20], [-1, 21]),
    "max_completion_tokens": field([1, MAX_TOKENS], [0, -1, 1025, 2**70, 2.5, "3"]),
}
COMPLETION_FIELDS = {
    "prompt": field(TEXT | TEXT.map(lambda text: [text]), [[], ["a", "b"], "", [""]]),
    "echo": field([False], [True]),
}
SHARED_FIELDS = {
    "model": field([MODEL_NAME], ["", "gpt-17"]),
    "max_tokens": field([1, MAX_TOKENS], [0, -1, 1025, 2**70, 2.5, "3"]),
    "temperature": field([0, MAX_TEMPERATURE], [-0.01, MAX_TEMPERATURE + 0.01, float("nan"), float("inf")]),
    "top_p": field([1e-9, 1], [0, 1.01, float("-inf")]),
    "stop": field(st.sampled_from([None, "\n", ["."] * MAX_STOP_SEQUENCES]) | st.lists(TEXT, min_size=1, max_size=2),
                  [["a"] * (MAX_STOP_SEQUENCES + 1), "", [""]]),
    "n": field([1], [0, 2]),
    "seed": field([0, -(2**63), 2**64 - 1, 2**64], [2**80, 1.5]),
    "stream_options": field([{"include_usage": True}, None], [{"include_usage": "maybe"}]),
    "lynx_max_cost_eur": field([CHEAP, 1e308], [0, -1, float("inf"), "cheap"]),
}
REQUIRED = {"model", "messages", "prompt"}


@st.composite
def generation_body(draw, chat: bool, stream: bool) -> dict:
    """A body with at most one field past its bound (or of another type); the others at their bounds or within."""
    fields = {**SHARED_FIELDS, **(CHAT_FIELDS if chat else COMPLETION_FIELDS)}
    broken = draw(st.none() | st.sampled_from(list(fields)))
    body = {"stream": stream}
    for name, (accepted, beyond) in fields.items():
        if name == broken:
            body[name] = draw(beyond)
        elif name in REQUIRED or draw(st.booleans()):
            body[name] = draw(accepted)
    if body.get("lynx_max_cost_eur") != CHEAP:  # keep what is served short
        for name in ("max_tokens", "max_completion_tokens"):
            if name != broken:
                body[name] = draw(st.integers(1, MAX_TOKENS))
    return body


@st.composite
def raw_body(draw, chat: bool, stream: bool) -> bytes:
    """The body's bytes: JSON (NaN and Infinity included, lone surrogates escaped), nested deep, or not JSON at all."""
    kind = draw(st.sampled_from(["body"] * 4 + ["deep", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64) | st.sampled_from([b"", b"[]", b"null", b'"x"', b"1e999999", b"{" * 1000]))
    body = draw(generation_body(chat, stream))
    ascii_only = draw(st.booleans())
    # Not ASCII: UTF-8, with lone surrogates written as their bytes (not valid UTF-8, as some clients send them).
    encoded = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if kind == "deep":
        field = draw(st.sampled_from(["messages", "prompt", "stop", "lynx_unknown_field"]))
        encoded = json.dumps({**body, field: None}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        room = (MAX_BODY_BYTES - len(encoded)) // 2
        depth = min(draw(st.sampled_from([500, 5_000, MAX_BODY_BYTES])), room)
        encoded = encoded.replace(f'"{field}": null'.encode(), f'"{field}": {nested(depth)}'.encode(), 1)
    assume(len(encoded) <= MAX_BODY_BYTES)  # past it, a 413 (test_bad_input)
    return encoded


def client_address(response: httpx.Response) -> tuple:
    return response.extensions["network_stream"].get_extra_info("client_addr")


@pytest.fixture(scope="module")
def keep_alive(stack: Stack) -> Iterator[httpx.Client]:
    """One connection for the whole run: each request is sent on the connection the previous one left."""
    with httpx.Client(base_url=stack.gateway.url, headers=stack.headers(), timeout=90,
                      limits=httpx.Limits(max_connections=1)) as client:
        yield client


# A fixed number of examples, no shrinking (a failing body is reported as sent: shrinking bodies of up to 1 MB against a
# live gateway took a quarter of an hour), so that a failing run ends about when a passing one does.
LIMITS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_any_body_up_to_the_limit_is_answered_with_its_ids(keep_alive: httpx.Client, path: str, stream: bool):
    answers: Counter = Counter()

    @LIMITS
    @given(raw_body(chat=path.endswith("chat/completions"), stream=stream))
    def run(body: bytes) -> None:
        assert len(body) <= MAX_BODY_BYTES
        with keep_alive.stream("POST", path, content=body, headers={"content-type": "application/json"}) as response:
            content = response.read()
        assert response.status_code < 500, content[:500]
        assert_ids(response.status_code, dict(response.headers), content)
        if response.status_code == 200 and stream:  # the chunk that ends it (or an error event) names the ids too
            events = [line.removeprefix("data: ") for line in content.decode().split("\n\n") if line]
            assert events[-1] == "[DONE]", events[-3:]
            ids = [json.loads(event)["lynx"] for event in events[:-1] if '"lynx"' in event]
            assert [(i["request_id"], i["trace_id"]) for i in ids] == [
                (response.headers["x-request-id"], response.headers["x-lynx-trace-id"])], events[-3:]
        answers[response.status_code] += 1
        following = keep_alive.get("/v1/models")
        assert following.status_code == 200, following.text
        assert client_address(following) == client_address(response), f"the connection closed after a {response.status_code}"

    run()
    # Positive evidence that both refusals and served requests were among the answers.
    assert answers[400] and answers[200], answers
