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

Before the first token there is no delta to watch, and the decoder checks the first decode step right after the
prefill. So as the decoder takes the sequence it says how fast it has recently run (``DecoderPace``: the prompt and a
solo step at its recent pace), and the gateway tops the limit up at once to pay for the prompt and every step at that
pace when slower than reserved (``starting_top_up``), while the prompt is prefilled.

Only what the budget cannot pay is never granted: then the limit stays, and the decoder ends the answer there
(finish_reason length, ``lynx.budget.spend_limit_reached``). Every second the decoder used is charged either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from lynx.accounting.pricing import SoloDecoder

# A top-up is due when the limit leaves less than the rest of the answer at this many times its measured pace: the
# decoder's forecast is the slowest of its recent steps, which on a loaded machine runs up to about twice the mean.
DUE_BELOW = 2.0
# A top-up raises the limit until it leaves this many times the rest that made it due.
RAISE_TO = 2.0


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


@dataclass(frozen=True)
class DecoderPace:
    """What the decoder said, as it took the sequence, its recent pace forecasts for it (``StreamStarted``)."""

    prompt_seconds: float | None  # its whole prompt
    step_seconds: float | None  # one decode step of its row alone

    @classmethod
    def unknown(cls) -> DecoderPace:
        return cls(None, None)


def starting_top_up(limit_seconds: float, reserved: Reserved, pace: DecoderPace) -> float:
    """The seconds to add to a sequence's limit before it runs (0: none), so that it pays for its prompt and every
    decode step, each at the reserved figure or at the decoder's recent pace when slower. A limit can start short of
    that when the stages before the decoder ran slower than estimated (a wait for the lease, a loaded tokenizer), or
    when the decoder runs slower than reserved: then its first decode step would be forecast past the limit right
    after the prefill, before any delta could bring a top-up."""
    prompt = max(reserved.prefill_seconds, pace.prompt_seconds or 0.0)
    step = max(reserved.step_seconds, pace.step_seconds or 0.0)
    return max(prompt + reserved.steps * step - limit_seconds, 0.0)


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
