"""The gateway accepts nothing a service behind it refuses: whatever passes the gateway's validation becomes payloads
that every contract accepts, because both read the limits of lynx.contracts.limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lynx.contracts.decoder import GenerateRequest
from lynx.contracts.limits import (
    MAX_CONTEXT_TOKENS, MAX_DEADLINE_SECONDS, MAX_MESSAGES, MAX_PROMPT_CHARACTERS, MAX_QUERY_CHARACTERS,
    MAX_STOP_SEQUENCES, MAX_TEMPERATURE, context_error, prompt_characters_error,
)
from lynx.contracts.retriever import RetrievedPassage, RetrieveRequest
from lynx.contracts.tokenizer import ChatMessage, ChatTemplateRequest, TokenizeRequest
from lynx.decoder.settings import DecoderSettings
from lynx.gateway.orchestrator import retrieval_query, with_passages
from lynx.gateway.schemas import ChatCompletionRequest, CompletionRequest
from lynx.gateway.settings import GatewaySettings

BOUNDARIES = [1, MAX_QUERY_CHARACTERS, MAX_QUERY_CHARACTERS + 1, MAX_PROMPT_CHARACTERS // 2,
              MAX_PROMPT_CHARACTERS - 1, MAX_PROMPT_CHARACTERS, MAX_PROMPT_CHARACTERS + 1]
LONG_TEXT = st.builds(lambda unit, size: unit * size, st.sampled_from(["x", "é", "\U0001f600"]),
                      st.sampled_from(BOUNDARIES))
SHORT_TEXT = st.text(min_size=1, max_size=20)
ROLES = st.sampled_from(["system", "user", "assistant"])
MESSAGES = (st.lists(st.tuples(ROLES, LONG_TEXT | SHORT_TEXT), min_size=1, max_size=3)
            | st.lists(st.tuples(ROLES, SHORT_TEXT), min_size=MAX_MESSAGES - 1, max_size=MAX_MESSAGES + 1))
PASSAGES = st.lists(st.builds(RetrievedPassage, id=st.just("p"), source=st.just("doc.html"),
                              text=st.text(max_size=30) | st.sampled_from(["x" * 2_000, "y" * 60_000]),
                              score=st.floats(0, 1)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(messages=MESSAGES, passages=PASSAGES)
def test_an_accepted_chat_becomes_payloads_the_tokenizer_and_retriever_accept(messages, passages):
    try:
        request = ChatCompletionRequest(model="m", messages=[{"role": r, "content": c} for r, c in messages])
    except ValidationError as refusal:  # refused where the limits say, naming them
        total = sum(len(c) for _, c in messages)
        assert total > MAX_PROMPT_CHARACTERS or len(messages) > MAX_MESSAGES, refusal
        return
    contract_messages = [ChatMessage(role=m.role, content=m.text()) for m in request.messages]
    prompt = ChatTemplateRequest(messages=with_passages(contract_messages, passages))
    assert sum(len(m.content) for m in prompt.messages) <= MAX_PROMPT_CHARACTERS
    if query := retrieval_query(contract_messages):
        RetrieveRequest(query=query, top_k=20)


@settings(max_examples=30, deadline=None)
@given(prompt=LONG_TEXT | SHORT_TEXT)
def test_an_accepted_completion_prompt_is_one_the_tokenizer_accepts(prompt):
    try:
        request = CompletionRequest(model="m", prompt=prompt)
    except ValidationError:
        assert len(prompt) > MAX_PROMPT_CHARACTERS
        return
    TokenizeRequest(text=request.prompt_text())


@given(prompt_tokens=st.integers(1, 3 * MAX_CONTEXT_TOKENS), max_tokens=st.integers(1, MAX_CONTEXT_TOKENS),
       context=st.integers(16, MAX_CONTEXT_TOKENS))
def test_a_prompt_within_the_context_is_a_generate_request_the_decoder_accepts(prompt_tokens, max_tokens, context):
    error = context_error(prompt_tokens, max_tokens, context)
    if error is not None:
        assert f"exceeds the context of {context} tokens" in error and f"{prompt_tokens} tokens" in error
        return
    GenerateRequest(input_ids=[0] * prompt_tokens, max_tokens=max_tokens, temperature=MAX_TEMPERATURE,
                    stop=["."] * MAX_STOP_SEQUENCES, deadline_seconds=MAX_DEADLINE_SECONDS)


def test_prompt_characters_are_counted_against_the_limit():
    assert prompt_characters_error(MAX_PROMPT_CHARACTERS) is None
    assert str(MAX_PROMPT_CHARACTERS) in prompt_characters_error(MAX_PROMPT_CHARACTERS + 1)


def test_the_retrieval_query_is_the_last_question_cut_to_what_the_retriever_takes():
    messages = [ChatMessage(role="user", content="first"), ChatMessage(role="user", content="é" * 30_000)]
    assert retrieval_query(messages) == "é" * MAX_QUERY_CHARACTERS


@pytest.mark.parametrize("configure", [
    lambda: GatewaySettings(max_tokens_limit=MAX_CONTEXT_TOKENS + 1),
    lambda: GatewaySettings(request_deadline_seconds=MAX_DEADLINE_SECONDS + 1),
    lambda: DecoderSettings(max_context=MAX_CONTEXT_TOKENS + 1),
])
def test_no_deployment_can_be_configured_past_what_the_contracts_accept(configure):
    with pytest.raises(ValidationError):
        configure()
