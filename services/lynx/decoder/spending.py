"""Spend limits: a sequence is charged no more engine seconds than its caller's reservation pays for.

The gateway gives each sequence of a budgeted request a limit on its prefill + decode seconds (what its reservation
leaves, ``lynx.accounting.pricing.decoder_seconds_left``). Its charge is measured time, so a loaded machine makes it
grow past any estimate; the limit holds it anyway. A model call cannot be stopped halfway, so the engine ends a
sequence (finish reason ``spend_limit``, charged what it used) *before* a call whose forecast share would take it past
its limit:

- a decode step's share is forecast as the split (``lynx.accounting.shares``) of the step cost model's time for the
  batch about to run, scaled by how much slower than the model recent decode steps ran (``StepPace``): the load of
  the machine, measured, not assumed;
- a long prompt's next chunk is forecast at the seconds per token recent prefill calls took (``PromptPace``). Its
  first token comes only with its prompt's last chunk, so the whole prompt it has left must fit too, at the recent
  calls' median pace: a prompt that cannot be finished within the limit is not continued, rather than spent for no
  answer (``prompt_forecast``).

The next call's forecast is the slowest of the last ``RECENT_CALLS`` calls' (``Recent``): on a loaded machine
consecutive calls differ by several times, and a forecast from the last call alone is passed by the next slower one
about half the time. The whole prompt's is the median: its many chunks average out, and the slowest pace, often that
of a short prompt's call (whose fixed part weighs on few tokens), would turn away long prompts that fit.

The caller may raise a sequence's limit while it runs (``BatchingEngine.raise_spend_limit``: its reservation grew).
A long prompt whose rest no longer fits is not ended at once: it waits between two chunks, idle and not charged, for
up to ``RAISE_WAIT_SECONDS``, having asked its caller for the limit it needs (``limit_wanted``, in a delta without
tokens); a new sequence's ``StreamStarted`` carries the engine's recent pace (``solo_forecast``), so that the caller can
raise a short limit before the first decode step is checked, right after the prefill.

What can still pass the limit is one call that ran slower than its forecast: the sequence's share of that call beyond
the forecast (docs/COSTS.md states the bound). A prompt's first call has no forecast (the reservation's prefill
estimate pays for it): a pace measured on other prompts' calls turned away the cheapest requests, whose one-token
prefill is mostly a call's fixed part.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from lynx.accounting.shares import StepCostModel, step_shares

RECENT_CALLS = 8
Pace = TypeVar("Pace")


@dataclass(frozen=True)
class StepPace:
    """How the last decode step ran: its measured seconds and what the step cost model predicted for it."""

    elapsed: float
    predicted: float

    def forecast(self, contexts: list[int], model: StepCostModel) -> float:
        """Seconds a step over ``contexts`` should take at the same pace (the model's own figure before any step)."""
        if self.predicted <= 0:
            return self.elapsed
        return self.elapsed * model.predict(contexts) / self.predicted


class Recent(Generic[Pace]):
    """The paces of the last RECENT_CALLS calls of one kind; a forecast is the slowest of theirs (``initial`` before
    the first call)."""

    def __init__(self, initial: Pace) -> None:
        self.initial = initial
        self.paces: deque[Pace] = deque(maxlen=RECENT_CALLS)

    def add(self, pace: Pace) -> None:
        self.paces.append(pace)

    def forecast(self, *call) -> float:
        """The slowest of the recent paces' forecasts for ``call`` (what their ``forecast`` takes)."""
        return max(pace.forecast(*call) for pace in self.paces or [self.initial])

    def typical(self, *call) -> float:
        """The median of the recent paces' forecasts for ``call``."""
        return statistics.median(pace.forecast(*call) for pace in self.paces or [self.initial])


NO_PACE_YET = StepPace(elapsed=1.0, predicted=1.0)  # before the first decode step: the model's own figures


@dataclass(frozen=True)
class PromptPace:
    """How the last prefill call ran: its seconds per prompt token (the call's time over the tokens it prefilled)."""

    seconds_per_token: float

    def forecast(self, tokens: int) -> float:
        return self.seconds_per_token * tokens


NO_PROMPT_PACE_YET = PromptPace(0.0)  # before the engine's first prefill: nothing to forecast from


@dataclass(frozen=True)
class RowSpend:
    """One running sequence before a decode step: its context, the engine seconds it was charged, its limit."""

    context: int
    spent_seconds: float
    limit_seconds: float | None  # None: no limit


def rows_past_limit(rows: list[RowSpend], model: StepCostModel, paces: Recent[StepPace]) -> list[int]:
    """The rows (indexes into ``rows``) whose forecast share of the next decode step would take them past their
    limit: they end before it. A row that leaves makes the others' shares of the fixed part larger, so the forecast
    is made again over those that stay until none more leaves."""
    staying, leaving = list(range(len(rows))), []
    while staying:
        contexts = [rows[index].context for index in staying]
        shares = step_shares(paces.forecast(contexts, model), contexts, model)
        over = [index for index, share in zip(staying, shares, strict=True)
                if past_limit(rows[index].spent_seconds, share, rows[index].limit_seconds)]
        if not over:
            break
        leaving.extend(over)
        staying = [index for index in staying if index not in over]
    return sorted(leaving)


def prompt_forecast(paces: Recent[PromptPace], prompt_left: int, next_call_tokens: int) -> float:
    """What a sequence should still spend on its prompt, as far as its limit is concerned: its next call at the slowest
    recent pace (the bound), and its whole prompt left at the median pace (no spend for no answer)."""
    return max(paces.forecast(next_call_tokens), paces.typical(prompt_left))


def solo_forecast(prompt_paces: list[PromptPace], step_paces: list[StepPace], prompt_tokens: int,
                  model: StepCostModel) -> tuple[float | None, float | None]:
    """What a new sequence should spend at the engine's recent pace, for its caller's limit: its whole prompt at the
    recent calls' median pace (as the engine forecasts a whole prompt) and one decode step of its row alone at the
    slowest recent pace (as the engine forecasts a step); None for either before any call of that kind. Takes copies
    of the paces: the caller runs on another thread than the engine that adds them."""
    prompt = statistics.median(p.forecast(prompt_tokens) for p in prompt_paces) if prompt_paces else None
    step = max(p.forecast([prompt_tokens], model) for p in step_paces) if step_paces else None
    return prompt, step


# How long a long prompt whose rest no longer fits its limit waits between two chunks for its caller to raise it (the
# caller tops its reservation up from its budget: a lease renewal at worst), before it ends for want of money.
RAISE_WAIT_SECONDS = 2.0


def limit_wanted(spent_seconds: float, prompt_seconds_left: float, steps: int, step_seconds: float) -> float:
    """The limit a sequence held for a raise asks its caller for: what it spent, its prompt left and its decode
    steps, at the engine's recent pace."""
    return spent_seconds + prompt_seconds_left + steps * step_seconds


def past_limit(spent_seconds: float, forecast_seconds: float, limit_seconds: float | None) -> bool:
    """Whether a call forecast to charge ``forecast_seconds`` more would take the sequence past its limit."""
    return limit_seconds is not None and spent_seconds + forecast_seconds > limit_seconds
