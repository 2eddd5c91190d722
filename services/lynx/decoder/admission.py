"""Admission by deadline: refuse at once what would wait past its deadline, instead of letting it wait for nothing.

A request that finds every slot taken waits until ``ahead + 1`` sequences have left their slots (``ahead``: those
queued before it that no free slot will take). With ``slots`` slots each held ``seconds_per_sequence`` on average,
one frees up every ``seconds_per_sequence / slots`` seconds, so it waits about ``(ahead + 1) x seconds_per_sequence /
slots``, and then needs about ``seconds_per_sequence`` of its own. When that sum exceeds the request's remaining
deadline it is refused (503 with ``Retry-After``): admitted, it would either time out in the queue (504) or be cut
short (``finish_reason: "deadline"``), and under sustained overload a queue admitted on the wait alone settles where
every request is admitted just in time to be cut short. A request that finds a free slot is always admitted.

``seconds_per_sequence`` is measured: an exponentially weighted mean of how long finished sequences held their slot,
taken only while others were waiting (a sequence that ran in a half-empty batch finished faster than one will once
the queue is long, which is when the estimate is read). Until the first such sequence ends it is the step cost
model's figure for the request's own length decoded in a full batch, times PRIOR_MARGIN: that model leaves out
prefill and was measured on a quiet machine, so alone it would admit a first burst that cannot finish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lynx.accounting.shares import StepCostModel

# Weight of the newest finished sequence in the mean: a burst's first few sequences move the estimate most of the way
# to the new regime, while one outlier moves it a fifth.
NEWEST_WEIGHT = 0.2
# The prior's allowance for what the step cost model leaves out: prefill, and a machine busy with more than the
# decoder (the gateway's worst-case estimate allows the same, LYNX_GATEWAY_BUDGET_ESTIMATE_MARGIN).
PRIOR_MARGIN = 3.0


@dataclass(frozen=True)
class Backlog:
    """What a new request finds in the engine."""

    waiting: int  # sequences already queued
    free_slots: int  # slots no sequence holds (the engine fills them at its next step)
    slots: int


@dataclass(frozen=True)
class Refusal:
    """Why a request was turned away: its expected time to finish and the deadline it had left, in seconds."""

    expected_wait_seconds: float
    expected_finish_seconds: float
    remaining_seconds: float

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until the queue ahead has shrunk enough for the request to finish in time (if nothing else
        arrives), at least 1."""
        return max(1, math.ceil(self.expected_finish_seconds - self.remaining_seconds))


def expected_wait_seconds(backlog: Backlog, seconds_per_sequence: float) -> float:
    """Seconds a new request waits for a slot: none while one is free for it, else until ``ahead + 1`` sequences
    have left theirs."""
    ahead = backlog.waiting - backlog.free_slots
    if ahead < 0:
        return 0.0
    return (ahead + 1) * seconds_per_sequence / backlog.slots


def admission_refusal(backlog: Backlog, seconds_per_sequence: float, remaining_seconds: float) -> Refusal | None:
    """None to admit; a Refusal when the request would wait for a slot and could not finish before its deadline."""
    wait = expected_wait_seconds(backlog, seconds_per_sequence)
    finish = wait + seconds_per_sequence
    if wait == 0.0 or finish <= remaining_seconds:
        return None
    return Refusal(wait, finish, remaining_seconds)


def weighted_mean(previous: float | None, newest: float) -> float:
    """The exponentially weighted mean after one more sample (the first sample is the mean)."""
    if previous is None:
        return newest
    return previous + NEWEST_WEIGHT * (newest - previous)


def prior_sequence_seconds(step_cost: StepCostModel, slots: int, prompt_tokens: int, max_tokens: int) -> float:
    """A sequence of ``max_tokens`` after a ``prompt_tokens`` prompt, decoded in a batch of ``slots`` alike, per the
    step cost model (its context at the middle of its output), times PRIOR_MARGIN: the estimate before any sequence
    was measured."""
    middle = prompt_tokens + max_tokens // 2
    return PRIOR_MARGIN * max_tokens * step_cost.predict([middle] * slots)
