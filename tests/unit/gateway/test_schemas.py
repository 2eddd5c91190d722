import pytest
from pydantic import ValidationError

from lynx.gateway.schemas import ChatCompletionRequest, CompletionRequest


def chat(**fields):
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **fields)


def test_content_parts_are_joined():
    request = ChatCompletionRequest(model="m", messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert request.messages[0].text() == "ab"


@pytest.mark.parametrize("fields", [
    {"temperature": 3}, {"top_p": 0}, {"n": 2}, {"max_tokens": 0}, {"stop": ["a", "b", "c", "d", "e"]},
    {"stop": [""]},
])
def test_out_of_range_fields_are_refused(fields):
    with pytest.raises(ValidationError):
        chat(**fields)


def test_unknown_fields_are_ignored_and_max_completion_tokens_wins():
    request = chat(max_tokens=5, max_completion_tokens=7, logit_bias={}, user="u")
    assert request.requested_max_tokens == 7


def test_completions_take_exactly_one_prompt():
    assert CompletionRequest(model="m", prompt=["only"]).prompt_text() == "only"
    for prompt in (["a", "b"], "", []):
        with pytest.raises(ValidationError):
            CompletionRequest(model="m", prompt=prompt)


def test_echo_is_refused():
    with pytest.raises(ValidationError, match="echo"):
        CompletionRequest(model="m", prompt="p", echo=True)
