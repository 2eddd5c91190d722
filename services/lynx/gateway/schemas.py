"""OpenAI-compatible request and response bodies. Unknown request fields are ignored, as OpenAI's own clients expect.

The response models are what the OpenAPI schema declares (the routes name them) and what clients such as
``lynx load`` parse; the integration schema fuzz test checks the gateway's real answers against them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from lynx.contracts.budgets import UsageState
from lynx.contracts.limits import (
    MAX_MESSAGES, MAX_PROMPT_CHARACTERS, MAX_STOP_SEQUENCES, MAX_TEMPERATURE, prompt_characters_error,
)


def whole_unicode(text: str) -> str:
    """JSON may escape half of a surrogate pair alone; such text cannot be encoded, so no service (nor an error message
    that quotes it) could take it. Validators call it, rather than an annotated type, so that an error's ``param``
    names the field and not the union member it was validated as."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"the text holds a lone surrogate ({text[error.start]!a}) at character {error.start}, "
                         "which is not Unicode text; send whole characters") from None
    return text


# The schema of a field a validator narrows says what that validator accepts, so that a client generated from
# the schema sends nothing the gateway refuses; the validators keep their own readable messages.
NON_EMPTY_TEXT = {"type": "string", "minLength": 1}
Stop = Annotated[str | list[str] | None, WithJsonSchema({"anyOf": [
    NON_EMPTY_TEXT, {"type": "array", "items": NON_EMPTY_TEXT, "maxItems": MAX_STOP_SEQUENCES}, {"type": "null"}]})]
PROMPT_TEXT = {**NON_EMPTY_TEXT, "maxLength": MAX_PROMPT_CHARACTERS}
Prompt = Annotated[str | list[str], WithJsonSchema({
    "anyOf": [PROMPT_TEXT, {"type": "array", "items": PROMPT_TEXT, "minItems": 1, "maxItems": 1}],
    "description": "One prompt per request: a string, or a list holding one."})]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str

    _whole_unicode = field_validator("text")(whole_unicode)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content")
    @classmethod
    def content_whole_unicode(cls, content: str | list[TextPart]) -> str | list[TextPart]:
        return whole_unicode(content) if isinstance(content, str) else content

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationFields(BaseModel):
    """Fields the two endpoints share."""

    # Python's JSON parser reads NaN and Infinity, which no field means.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    seed: int | None = None
    lynx_max_cost_eur: float | None = Field(
        default=None, gt=0, description="lynx: the most this request may cost; the answer stops there (finish_reason "
                                        "length), its max_tokens lowered to what the ceiling affords at worst case.")

    @field_validator("stop")
    @classmethod
    def at_most_four_stops(cls, value: Stop) -> Stop:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        for stop in stops:
            whole_unicode(stop)
        return value

    _model_whole_unicode = field_validator("model")(whole_unicode)

    @field_validator("seed")
    @classmethod
    def unsigned_seed(cls, value: int | None) -> int | None:
        """OpenAI takes any 64-bit seed; the decoder's generator only non-negative ones (this keeps them distinct)."""
        return None if value is None else value % 2**64

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=MAX_MESSAGES,
        description=f"Their contents together hold at most {MAX_PROMPT_CHARACTERS} characters.")
    max_completion_tokens: int | None = Field(default=None, ge=1)
    retrieval_top_k: int | None = Field(default=None, ge=0, le=20,
                                        description="lynx: passages to retrieve (0 turns retrieval off).")

    @field_validator("messages")
    @classmethod
    def prompt_within_limit(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if error := prompt_characters_error(sum(len(m.text()) for m in messages)):
            raise ValueError(error)
        return messages

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationFields):
    prompt: Prompt
    echo: bool = Field(default=False, description="Not supported: only false is accepted.",
                       json_schema_extra={"const": False})

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        text = value if isinstance(value, str) else value[0]
        if not text:
            raise ValueError("the prompt must not be empty")
        whole_unicode(text)
        if error := prompt_characters_error(len(text)):
            raise ValueError(error)
        return value

    @field_validator("echo")
    @classmethod
    def no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


FinishReason = Literal["stop", "length", "deadline"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Cost(BaseModel):
    currency: str
    total: float
    stages: dict[str, float] = Field(description="tokenize, retrieve, prefill, decode and other; they add up to total.")


class BudgetUse(BaseModel):
    reserved_eur: float = Field(description="The worst case the request reserved against its tenant's budget.")
    max_tokens: int = Field(description="What the request ran with, after any cost ceiling.")
    state: UsageState = Field(description="The tenant's budget state as the answer ends ('unbudgeted': none).")
    notice: str | None = Field(description="In Warning, a sentence a client can show its user (how much of today's "
                                           "budget is used, what is left, when it resets); null otherwise.")


class PassageUse(BaseModel):
    id: str
    source: str
    score: float


class LynxInfo(BaseModel):
    """lynx's additions to every completion (in the final chunk of a stream)."""

    trace_id: str
    request_id: str
    cost: Cost
    cost_identity_ok: bool
    outcome: str = Field(description="How the ledger saw the request end: completed or deadline.")
    timings: dict[str, float]
    budget: BudgetUse
    passages: list[PassageUse]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    lynx: LynxInfo


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed chat completion; the one with ``finish_reason`` carries ``lynx``, and with
    ``stream_options.include_usage`` a last one with no choices carries ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    lynx: LynxInfo | None = None
    usage: Usage | None = None


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    lynx: LynxInfo


class TextChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason | None


class TextCompletionChunk(BaseModel):
    """One SSE event of a streamed completion (OpenAI names its object ``text_completion`` too); as in chat, the
    one with ``finish_reason`` carries ``lynx``, and a last one with no choices may carry ``usage``."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice]
    lynx: LynxInfo | None = None
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
