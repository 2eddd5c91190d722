"""Gateway <-> tokenizer."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from lynx.contracts.limits import MAX_MESSAGES, MAX_PROMPT_CHARACTERS, prompt_characters_error


class TokenizeRequest(BaseModel):
    text: str = Field(max_length=MAX_PROMPT_CHARACTERS, description="Plain text: special-token markers stay text.")


class ChatMessage(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str = Field(max_length=MAX_PROMPT_CHARACTERS)


class ChatTemplateRequest(BaseModel):
    # One more than a client may send: the gateway may add a system message for the retrieved passages.
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES + 1)
    add_generation_prompt: bool = True

    @field_validator("messages")
    @classmethod
    def prompt_within_limit(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if error := prompt_characters_error(sum(len(m.content) for m in messages)):
            raise ValueError(error)
        return messages


class TokenizeResponse(BaseModel):
    ids: list[int]
    count: int
    seconds: float = Field(description="Processing time spent on this request (for cost attribution).")


class DetokenizeRequest(BaseModel):
    ids: list[int] = Field(max_length=100_000)


class DetokenizeResponse(BaseModel):
    text: str
