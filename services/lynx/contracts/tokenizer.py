"""Gateway <-> tokenizer."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_TEXT_CHARACTERS = 400_000


class TokenizeRequest(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARACTERS, description="Plain text: special-token markers stay text.")


class ChatMessage(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str = Field(max_length=MAX_TEXT_CHARACTERS)


class ChatTemplateRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    add_generation_prompt: bool = True


class TokenizeResponse(BaseModel):
    ids: list[int]
    count: int
    seconds: float = Field(description="Processing time spent on this request (for cost attribution).")


class DetokenizeRequest(BaseModel):
    ids: list[int] = Field(max_length=100_000)


class DetokenizeResponse(BaseModel):
    text: str
