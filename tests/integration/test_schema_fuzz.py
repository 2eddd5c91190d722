"""Schemathesis against the running gateway's own OpenAPI schema: no 5xx, and every answer one the schema declares
(status, content type, body; each event of a stream too).

Cases come from schemathesis's strategies under hypothesis's ``@given`` (its pytest loader ``from_fixture`` does not
run under pytest 9.2). Positive cases ask for the served model, in one run streamed and in another not, so that real
completions of both kinds are checked against their declared 200 bodies whatever hypothesis draws; and for at most a
few tokens, so that the runs take about a minute together on two cores.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from .conftest import MODEL_NAME, Stack

MAX_TOKENS = 4
# What every response must satisfy: no server error, and a status, headers, content type and body that the schema
# declares for it.
CONFORMANCE = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
               checks.response_headers_conformance, checks.response_schema_conformance]
FUZZ = settings(max_examples=40, deadline=timedelta(seconds=30), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def gateway_schema(stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.gateway.url}/openapi.json")


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
