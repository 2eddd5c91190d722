"""A bounded request's decoder spend limit follows its tenant's money, not the machine's load.

The decoder ends a budgeted request's sequence where its limit runs out (``lynx.decoder.spending``), and the limit
starts as what the request's reservation pays for (``pricing.decoder_seconds_left``). The reservation is a worst case
priced from the decoder's solo pace times a margin; a loaded machine runs several times slower than that, so a fixed
limit cut answers the tenant could pay for. Instead, the gateway watches what the sequence is charged (each delta says
so) and, while the answer runs, tops the reservation up from the budget (the lease, renewed from the controller if
need be) and raises the decoder's limit by what it got:

- due when what the limit leaves would not pay for the rest of the answer (``rest_seconds``) at ``DUE_BELOW`` x the
  pace measured so far (``seconds_per_token``: the sequence's own decode seconds per token; before its first decode
  step, the reservation's per-step figure scaled by how its prefill ran against what it reserved), or at the reserved
  per-step figure when that is more (a row that had company in its batch so far may run alone next);
- it asks for enough that the limit leaves ``RAISE_TO`` x that rest, so that a slow answer tops up once or twice, not
  at every token, and the raise reaches the decoder long before the limit could bind.

Before the first token there is no delta to watch: a long prompt is prefilled in chunks, and the decoder stops one
whose rest no longer fits. So the limit a request starts with pays for its prompt at the slowest pace recent prompts
ran at against what they reserved (``prompt_seconds``, the gateway's ``RECENT_PROMPTS`` last), topped up before the
decoder is called when the reservation leaves less.

Only what the budget cannot pay is never granted: then the limit stays, and the decoder ends the answer there
(finish_reason length, ``lynx.budget.spend_limit_reached``). Every second the decoder used is charged either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lynx.accounting.pricing import SoloDecoder

# A top-up is due when the limit leaves less than the rest of the answer at this many times its measured pace: the
# decoder's forecast is the slowest of its recent steps, which on a loaded machine runs up to about twice the mean.
DUE_BELOW = 2.0
# A top-up raises the limit until it leaves this many times the rest that made it due.
RAISE_TO = 2.0
# How many recent prompts' prefill paces a gateway remembers (each the prefill's seconds over what it reserved).
RECENT_PROMPTS = 8


@dataclass(frozen=True)
class Reserved:
    """The decoder seconds a request's reservation was priced at: its prompt's prefill, and one decode step."""

    prefill_seconds: float
    step_seconds: float

    steps: int  # decode steps: max_tokens - 1

    @classmethod
    def of(cls, solo: SoloDecoder, prompt_tokens: int, max_tokens: int) -> Reserved:
        steps = max(max_tokens - 1, 0)
        return cls(solo.prefill_seconds(prompt_tokens), solo.decode_seconds(prompt_tokens, max_tokens) / max(steps, 1),
                   steps)


def prompt_seconds(reserved: Reserved, recent_prompt_paces: Iterable[float]) -> float:
    """What a request's limit should pay for its prompt: its reserved prefill, at the slowest recent prompt's pace
    against what that one reserved when slower."""
    return reserved.prefill_seconds * max([1.0, *recent_prompt_paces])


def starting_top_up(limit_seconds: float, reserved: Reserved, recent_prompt_paces: Iterable[float]) -> float:
    """Before the decoder is called: the seconds to add to a limit that would not pay for the prompt at recent
    prompts' pace (0: none), so that it then pays for that and every decode step as reserved. The stages before the
    decoder ran slower than estimated (a wait for the lease, a loaded tokenizer) can leave such a limit; so can a
    loaded decoder, whose prompts run slower than reserved."""
    prompt = prompt_seconds(reserved, recent_prompt_paces)
    if limit_seconds >= prompt:
        return 0.0
    return prompt + reserved.steps * reserved.step_seconds - limit_seconds


@dataclass(frozen=True)
class Progress:
    """A running sequence, as its last delta tells: what it was charged, its tokens, and its limit now."""

    prefill_seconds: float
    decode_seconds: float
    tokens: int  # completion tokens so far (the first comes with the prefill)
    max_tokens: int
    limit_seconds: float

    @property
    def spent_seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds


def seconds_per_token(progress: Progress, reserved: Reserved) -> float:
    """The sequence's measured pace: its own decode seconds per token once it has decoded, before that the reserved
    step scaled by how its prefill ran against what it reserved."""
    if progress.tokens > 1:
        return progress.decode_seconds / (progress.tokens - 1)
    if reserved.prefill_seconds > 0:
        return reserved.step_seconds * progress.prefill_seconds / reserved.prefill_seconds
    return reserved.step_seconds


def rest_seconds(progress: Progress, reserved: Reserved) -> float:
    """What the limit should still leave for the rest of the answer: its tokens at DUE_BELOW x the measured pace, or
    at the reserved step when that is more."""
    return (progress.max_tokens - progress.tokens) * max(DUE_BELOW * seconds_per_token(progress, reserved), reserved.step_seconds)


def top_up_seconds(progress: Progress, reserved: Reserved) -> float:
    """The decoder seconds to add to the sequence's limit now (0: not due). Before the first token there is no pace
    of this sequence to plan from, and after the last nothing to pay for."""
    if progress.tokens == 0 or progress.tokens >= progress.max_tokens:
        return 0.0
    rest = rest_seconds(progress, reserved)
    left = progress.limit_seconds - progress.spent_seconds
    if left >= rest:
        return 0.0
    return RAISE_TO * rest - left
