"""OpenAI response bodies and SSE chunks for both endpoints, plus lynx's own ``lynx`` field."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from lynx.contracts.budgets import BudgetStanding
from lynx.gateway.orchestrator import Generation
from lynx.gateway.standing import notice


@dataclass(frozen=True)
class Shape:
    """How one endpoint spells its objects: chat puts text in a message, completions in ``text``."""

    object_name: str
    chunk_object_name: str
    id_prefix: str
    chat: bool

    def choice(self, text: str, finish_reason: str | None, *, streaming: bool, first: bool = False) -> dict:
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if not streaming:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "finish_reason": finish_reason}


CHAT = Shape("chat.completion", "chat.completion.chunk", "chatcmpl-", chat=True)
COMPLETION = Shape("text_completion", "text_completion", "cmpl-", chat=False)


def usage(generation: Generation) -> dict:
    prompt, completion = generation.account.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def lynx_field(generation: Generation, request_id: str, budget: BudgetStanding | None) -> dict:
    """lynx's additions: the trace id, the cost by stage, timings, the budget, and which passages were used."""
    settlement = generation.settlement
    return {
        "trace_id": generation.trace_id,
        "request_id": request_id,
        "cost": settlement.cost.as_dict(),
        "cost_identity_ok": settlement.identity_ok,
        "outcome": generation.account.outcome,
        "timings": generation.timings(),
        # What the request reserved against its tenant's budget, the max_tokens it ran with (a cost ceiling lowers it),
        # the budget's state as the answer ends and, in Warning, the notice a client shows.
        "budget": {"reserved_eur": generation.account.hold.reserved, "max_tokens": generation.request.max_tokens,
                   "state": budget.state if budget else "unbudgeted",
                   "notice": notice(generation.job.tenant.id, budget)},
        "passages": [{"id": p.id, "source": p.source, "score": p.score} for p in generation.passages],
    }


class Envelope:
    """Builds the bodies of one response (all chunks share an id and creation time)."""

    def __init__(self, shape: Shape, model: str) -> None:
        self.shape = shape
        self.model = model
        self.id = shape.id_prefix + uuid.uuid4().hex
        self.created = int(time.time())

    def _base(self, object_name: str) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model}

    def complete(self, text: str, generation: Generation, request_id: str, budget: BudgetStanding | None) -> dict:
        return {**self._base(self.shape.object_name),
                "choices": [self.shape.choice(text, generation.finish_reason, streaming=False)],
                "usage": usage(generation), "lynx": lynx_field(generation, request_id, budget)}

    def chunk(self, text: str, *, first: bool = False) -> str:
        body = {**self._base(self.shape.chunk_object_name),
                "choices": [self.shape.choice(text, None, streaming=True, first=first)]}
        return sse(body)

    def final_chunks(self, generation: Generation, request_id: str, include_usage: bool,
                     budget: BudgetStanding | None) -> str:
        last = {**self._base(self.shape.chunk_object_name),
                "choices": [self.shape.choice("", generation.finish_reason, streaming=True)],
                "lynx": lynx_field(generation, request_id, budget)}
        chunks = sse(last)
        if include_usage:
            chunks += sse({**self._base(self.shape.chunk_object_name), "choices": [], "usage": usage(generation)})
        return chunks + "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"
