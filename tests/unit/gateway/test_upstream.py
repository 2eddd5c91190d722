"""Which upstream refusals reach the client as they are, and which become the gateway's 502."""

import httpx
import pytest

from lynx.gateway.upstream import upstream_failure


def refusal(status: int, code: str, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {
        "message": f"{code} happened", "type": "invalid_request_error", "param": "max_tokens", "code": code}})


def test_a_context_overflow_is_the_clients_to_fix_and_passes_through():
    error = upstream_failure("decoder", refusal(400, "context_length_exceeded"))
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "max_tokens")


@pytest.mark.parametrize("code, retry_after", [("queue_full", "1"), ("queue_wait_exceeds_deadline", "17")])
def test_an_overloaded_decoders_refusal_passes_through_with_its_retry_after(code, retry_after):
    error = upstream_failure("decoder", refusal(503, code, {"Retry-After": retry_after}))
    assert (error.status, error.code, error.headers) == (503, code, {"Retry-After": retry_after})


@pytest.mark.parametrize("status, code", [(400, "invalid_token_id"), (422, "invalid_request"), (404, "not_found"),
                                          (500, "internal_error")])
def test_anything_else_is_a_deployment_fault(status, code):
    error = upstream_failure("tokenizer", refusal(status, code))
    assert error.status == 502 and error.code == "upstream_error"
    assert "tokenizer" in error.message and code in error.message


def test_a_body_that_is_not_json_is_a_502_too():
    error = upstream_failure("retriever", httpx.Response(500, text="<html>oops</html>"))
    assert error.status == 502
