"""Every kind of bad request gets the right 4xx and an OpenAI-style body that says what to fix."""

from __future__ import annotations

import httpx
import pytest

from .conftest import MODEL_NAME, Stack


def post(stack: Stack, path: str, *, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(f"{stack.gateway.url}{path}", headers=stack.headers() if headers is None else headers,
                      timeout=60, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str, mentions: str) -> None:
    """The status, an OpenAI-shaped body that says what to fix, and the ids that find the request."""
    assert response.status_code == status, response.text
    body = response.json()
    error = body["error"]
    assert error["code"] == code
    assert mentions in error["message"]
    assert error["type"] and "param" in error
    trace_id = response.headers["x-lynx-trace-id"]
    assert len(trace_id) == 32 and body["lynx"]["trace_id"] == trace_id
    assert body["lynx"]["request_id"] == response.headers["x-request-id"]


def test_invalid_json(stack: Stack):
    response = post(stack, "/v1/chat/completions", content=b'{"model": ', headers={
        **stack.headers(), "content-type": "application/json"})
    assert_error(response, 400, "invalid_request", "not valid JSON")


def test_wrong_type(stack: Stack):
    response = post(stack, "/v1/chat/completions", json={"model": MODEL_NAME, "max_tokens": "many",
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 400, "invalid_request", "max_tokens")
    assert response.json()["error"]["param"] == "max_tokens"


def test_missing_messages(stack: Stack):
    assert_error(post(stack, "/v1/chat/completions", json={"model": MODEL_NAME}), 400, "invalid_request", "messages")


def test_unknown_model(stack: Stack):
    response = post(stack, "/v1/chat/completions", json={"model": "gpt-17",
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 404, "model_not_found", MODEL_NAME)


@pytest.mark.parametrize("max_tokens", [0, -3, 100_000])
def test_max_tokens_out_of_range(stack: Stack, max_tokens: int):
    response = post(stack, "/v1/completions", json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": max_tokens})
    assert response.status_code == 400
    assert "max_tokens" in response.json()["error"]["message"]


def test_prompt_longer_than_the_context(stack: Stack):
    response = post(stack, "/v1/completions", json={"model": MODEL_NAME, "prompt": "lynx " * 3000,
                                                     "max_tokens": 16})
    assert_error(response, 400, "context_length_exceeded", "exceeds the context")


def test_oversized_body(stack: Stack):
    response = post(stack, "/v1/completions", json={"model": MODEL_NAME, "prompt": "x" * 2_000_000})
    assert_error(response, 413, "request_too_large", "smaller body")


def test_oversized_chunked_body(stack: Stack):
    """No Content-Length to refuse up front: the limit trips while the body streams in."""
    def chunks():
        yield b'{"model": "' + MODEL_NAME.encode() + b'", "prompt": "'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}'
    response = post(stack, "/v1/completions", content=chunks(), headers={
        **stack.headers(), "content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large", "smaller body")


def test_errors_leave_an_exemplar_with_their_trace_id(stack: Stack):
    response = post(stack, "/v1/chat/completions", json={"model": "gpt-17",
                                                          "messages": [{"role": "user", "content": "hi"}]})
    trace_id = response.headers["x-lynx-trace-id"]
    metrics = httpx.get(f"{stack.gateway.url}/metrics",
                        headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    error_lines = [line for line in metrics.splitlines()
                   if line.startswith("lynx_request_total{") and 'status="404"' in line]
    assert any(f'trace_id="{trace_id}"' in line for line in error_lines), error_lines


def test_missing_key(stack: Stack):
    response = post(stack, "/v1/chat/completions", headers={},
                    json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 401, "missing_api_key", "Bearer")


def test_wrong_key(stack: Stack):
    response = post(stack, "/v1/chat/completions", headers={"Authorization": "Bearer lynx-not-a-key"},
                    json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 401, "invalid_api_key", "Invalid API key")


def test_more_than_one_choice(stack: Stack):
    response = post(stack, "/v1/chat/completions", json={"model": MODEL_NAME, "n": 3,
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert_error(response, 400, "invalid_request", "n")


def test_unknown_route_is_a_json_404(stack: Stack):
    response = httpx.get(f"{stack.gateway.url}/v1/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


def test_decoder_refuses_token_ids_outside_the_vocabulary(stack: Stack):
    response = httpx.post(f"{stack.decoder.url}/v1/generate", json={"input_ids": [1, 10**9], "max_tokens": 1})
    assert_error(response, 400, "invalid_token_id", "input_ids")


def test_the_key_never_reaches_the_logs(stack: Stack):
    post(stack, "/v1/chat/completions", json={"model": MODEL_NAME, "max_tokens": 2,
                                              "messages": [{"role": "user", "content": "secret prompt text"}]})
    log = stack.gateway.log.read_text()
    assert stack.key not in log
    assert "secret prompt text" not in log


def client_address(response: httpx.Response) -> tuple:
    """The local end of the connection that carried ``response``: equal for two responses on one connection."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def assert_connection_still_serves(client: httpx.Client, stack: Stack, previous: httpx.Response) -> None:
    """The next request on the same keep-alive connection is answered (the error did not close or reset it)."""
    following = client.get("/v1/models", headers=stack.headers())
    assert following.status_code == 200, following.text
    assert client_address(following) == client_address(previous), "the gateway closed the connection after the error"


# Found by a new user (issue 19): each of these got a 500 without its ids, and often broke the connection after it.
LONG_INPUTS = {
    "chat message of 20,001 characters, retrieval on": (
        "/v1/chat/completions", {"messages": [{"role": "user", "content": ("lynx " * 4001)[:20_001]}]},
        "context_length_exceeded", "context of"),
    "chat prompt past 8,192 tokens, retrieval off": (
        "/v1/chat/completions", {"retrieval_top_k": 0, "messages": [{"role": "user", "content": "lynx " * 9000}]},
        "context_length_exceeded", "context of"),
    "legacy completion of 'hello world. ' * 3000": (
        "/v1/completions", {"prompt": "hello world. " * 3000}, "context_length_exceeded", "context of"),
    "chat content past 400,000 characters": (
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "lynx " * 80_001}]},
        "invalid_request", "400000"),
}


@pytest.mark.parametrize("path, body, code, mentions", LONG_INPUTS.values(), ids=LONG_INPUTS.keys())
def test_long_inputs_are_refused_with_the_limit(stack: Stack, path: str, body: dict, code: str, mentions: str):
    with httpx.Client(base_url=stack.gateway.url, timeout=60) as client:
        response = client.post(path, headers=stack.headers(), json={"model": MODEL_NAME, "max_tokens": 2, **body})
        assert_error(response, 400, code, mentions)
        assert_connection_still_serves(client, stack, response)


def test_long_inputs_leave_the_sdk_client_working(stack: Stack):
    """One openai SDK client alternating a long request and a normal one: every normal one is answered."""
    import openai

    client = openai.OpenAI(base_url=f"{stack.gateway.url}/v1", api_key=stack.key, max_retries=0, timeout=60)
    refused, served = 0, 0
    for _ in range(5):
        for path, body, code, _ in LONG_INPUTS.values():
            with pytest.raises(openai.BadRequestError) as refusal:
                client.post(path.removeprefix("/v1"), cast_to=dict, body={"model": MODEL_NAME, "max_tokens": 2, **body})
            assert refusal.value.code == code and refusal.value.response.headers["x-request-id"]
            refused += 1
            answer = client.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=1)
            served += answer.usage.completion_tokens == 1
    assert (refused, served) == (20, 20)


@pytest.mark.parametrize("field, value", [("content", '"a\\udfff"'), ("text part", '[{"type": "text", "text": "\\ud800"}]'),
                                          ("stop", '"\\ud83d"')])
def test_a_lone_surrogate_is_refused_with_its_place(stack: Stack, field: str, value: str):
    """Found by the property test (test_schema_fuzz): half a surrogate pair, which JSON can escape alone, got a 500."""
    content, stop = (value, '"."') if field != "stop" else ('"hi"', value)
    body = f'{{"model": "{MODEL_NAME}", "max_tokens": 1, "stop": {stop}, "messages": [{{"role": "user", "content": {content}}}]}}'
    with httpx.Client(base_url=stack.gateway.url, timeout=60) as client:
        response = client.post("/v1/chat/completions", content=body.encode(), headers={
            **stack.headers(), "content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "unicode string" in response.text or "lone surrogate" in response.text
        assert_error(response, 400, "invalid_request", "")
        assert_connection_still_serves(client, stack, response)
