"""The cost model: one source of truth for what a request cost, by stage.

cost(stage) = hardware seconds attributed to the request in that stage x the EUR/s rate of
the tier that ran it. ``other`` is the gateway's own time, measured by its own stage timers.
lynx.accounting.identity checks those figures against quantities measured independently. See docs/COSTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lynx.accounting.shares import StepCostModel

STAGES = ("tokenize", "retrieve", "prefill", "decode", "other")
STAGE_TIER = {"tokenize": "tokenizer", "retrieve": "retriever", "prefill": "decoder", "decode": "decoder",
              "other": "gateway"}
SECONDS_PER_HOUR = 3600.0


class CostSettings(BaseSettings):
    """Rates of the hardware tiers, in the currency named (EUR unless told otherwise)."""

    model_config = SettingsConfigDict(env_prefix="LYNX_COST_", extra="ignore", frozen=True)

    currency: str = "EUR"
    gateway_per_hour: float = Field(default=0.04, ge=0, description="Gateway pod (CPU) rate per hour.")
    tokenizer_per_hour: float = Field(default=0.04, ge=0, description="Tokenizer pod (CPU) rate per hour.")
    retriever_per_hour: float = Field(default=0.08, ge=0, description="Retriever pod (CPU) rate per hour.")
    decoder_per_hour: float = Field(default=0.36, ge=0, description="Decoder node rate per hour.")
    untimed_bound_seconds: float = Field(
        default=0.02, gt=0,
        description="Request time outside every stage timer above which a stage is taken to be missing its timer "
                    "(the floor of that check's tolerance).")
    identity_tolerance: float = Field(
        default=0.001, ge=0,
        description="What a stage's figures may differ from an independent measurement by, as a share of the "
                    "request's cost (never less than the clocks' floor).")

    def per_second(self, tier: str) -> float:
        return getattr(self, f"{tier}_per_hour") / SECONDS_PER_HOUR


@dataclass(frozen=True)
class RemoteCall:
    """One call to another service: the hardware seconds it reports, the wall time the gateway saw."""

    busy_seconds: float
    wall_seconds: float


NO_CALL = RemoteCall(0.0, 0.0)


@dataclass(frozen=True)
class DecoderUse:
    """What the decoder reported for one sequence, and the wall time the gateway saw the call take."""

    wall_seconds: float
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    resident_seconds: float = 0.0
    engine_busy_seconds: float | None = None  # None: the decoder's final report never arrived


@dataclass(frozen=True)
class RequestTimes:
    wall_seconds: float  # the request's own stopwatch
    gateway_seconds: float  # the gateway's own stage timers, summed
    tokenize: RemoteCall
    retrieve: RemoteCall
    decoder: DecoderUse
    interrupted_seconds: float = 0.0  # untimed seconds while the gateway's loop was preempted or collecting garbage

    @property
    def timed_seconds(self) -> float:
        return (self.gateway_seconds + self.tokenize.wall_seconds + self.retrieve.wall_seconds
                + self.decoder.wall_seconds)

    def stage_seconds(self) -> dict[str, float]:
        return {"tokenize": self.tokenize.busy_seconds, "retrieve": self.retrieve.busy_seconds,
                "prefill": self.decoder.prefill_seconds, "decode": self.decoder.decode_seconds,
                "other": self.gateway_seconds}


NOTHING_YET = RequestTimes(wall_seconds=0.0, gateway_seconds=0.0, tokenize=NO_CALL, retrieve=NO_CALL,
                           decoder=DecoderUse(0.0))  # a request before its first stage


@dataclass(frozen=True)
class CostBreakdown:
    currency: str
    stages: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.stages.values())

    def as_dict(self) -> dict:
        return {"currency": self.currency, "total": self.total, "stages": dict(self.stages)}


def attribute_costs(times: RequestTimes, rates: CostSettings) -> CostBreakdown:
    return CostBreakdown(rates.currency, {stage: seconds * rates.per_second(STAGE_TIER[stage])
                                          for stage, seconds in times.stage_seconds().items()})


@dataclass(frozen=True)
class SoloDecoder:
    """How long one sequence alone in the decoder keeps it busy: the basis of a request's worst-case cost.

    Alone, a sequence pays every decode step's fixed part in full (no other row shares it): the most
    the step split charges a row of its context. ``margin`` (>= 1) covers what the coefficients do
    not: a decoder slower than measured (CPU contention) and the share of joining a batch that a
    prefill carries. It is an estimate, not a bound: docs/BENCHMARKS.md measures how it held.
    """

    prefill_seconds_per_token: float
    step: StepCostModel
    margin: float = 1.0

    def prefill_seconds(self, prompt_tokens: int) -> float:
        """A prefill is one model call: a step's fixed part, then its tokens (the fixed part is what a short prompt's
        prefill mostly costs: a 1-token prefill measured 6-15 ms, against 1.5 ms for its token alone)."""
        return self.margin * (self.step.fixed_seconds + self.prefill_seconds_per_token * max(prompt_tokens, 1))

    def decode_seconds(self, prompt_tokens: int, max_tokens: int) -> float:
        """The prefill yields the first token; each of the other ``max_tokens - 1`` is one decode step over the
        context so far (``prompt_tokens``, ``prompt_tokens + 1``, ...), its row alone in the batch."""
        steps = max(max_tokens - 1, 0)
        context_tokens = steps * prompt_tokens + steps * (steps - 1) // 2
        step = self.step
        # A row alone pays the whole fixed part, its row, and its context.
        seconds = steps * (step.fixed_seconds + step.per_row_seconds) + context_tokens * step.per_context_token_seconds
        return self.margin * seconds


def worst_case_cost(so_far: RequestTimes, prompt_tokens: int, max_tokens: int, solo: SoloDecoder,
                    rates: CostSettings) -> float:
    """A request's worst-case cost: the stages it has used so far, plus its prompt and ``max_tokens`` decoded alone."""
    decoder = DecoderUse(wall_seconds=0.0, prefill_seconds=solo.prefill_seconds(prompt_tokens),
                         decode_seconds=solo.decode_seconds(prompt_tokens, max_tokens))
    return attribute_costs(replace(so_far, decoder=decoder), rates).total


def cost_span_attributes(cost: CostBreakdown) -> dict[str, float | str]:
    attributes: dict[str, float | str] = {"lynx.cost.eur": cost.total, "lynx.cost.currency": cost.currency}
    attributes.update({f"lynx.cost.stage.{stage}.eur": value for stage, value in cost.stages.items()})
    return attributes
