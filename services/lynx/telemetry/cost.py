"""The cost model: one source of truth for what a request cost, by stage.

cost(stage) = hardware seconds attributed to the request in that stage x the EUR/s rate of
the tier that ran it. ``other`` is the gateway's own time: the request's wall time minus the
wall time of its calls to the other services. The total is summed per hardware tier, a
different grouping from the per-stage figures, and the two must agree (the identity).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from opentelemetry.trace import Span
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lynx.telemetry.metrics import cost_metrics

log = logging.getLogger("lynx.cost")
STAGES = ("tokenize", "retrieve", "prefill", "decode", "other")
STAGE_TIER = {"tokenize": "tokenizer", "retrieve": "retriever", "prefill": "decoder", "decode": "decoder",
              "other": "gateway"}
SECONDS_PER_HOUR = 3600.0
VIOLATION_REASONS = ("sum_mismatch", "stage_counted_twice", "stage_missing_timer", "busy_exceeds_wall",
                     "negative_stage")


class CostSettings(BaseSettings):
    """Rates of the hardware tiers, in the currency named (EUR unless told otherwise)."""

    model_config = SettingsConfigDict(env_prefix="LYNX_COST_", extra="ignore", frozen=True)

    currency: str = "EUR"
    gateway_per_hour: float = Field(default=0.04, ge=0, description="Gateway pod (CPU) rate per hour.")
    tokenizer_per_hour: float = Field(default=0.04, ge=0, description="Tokenizer pod (CPU) rate per hour.")
    retriever_per_hour: float = Field(default=0.08, ge=0, description="Retriever pod (CPU) rate per hour.")
    decoder_per_hour: float = Field(default=0.36, ge=0, description="Decoder node rate per hour.")
    identity_tolerance: float = Field(default=0.001, gt=0, description="Relative tolerance of the identity.")
    other_bound_seconds: float = Field(
        default=0.5, gt=0, description="Gateway time above which a stage is taken to be missing its timer.")

    def per_second(self, tier: str) -> float:
        return getattr(self, f"{tier}_per_hour") / SECONDS_PER_HOUR


@dataclass(frozen=True)
class RemoteCall:
    """One call to another service: the hardware seconds it reports, the wall time the gateway saw."""

    busy_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class RequestTimes:
    wall_seconds: float
    tokenize: RemoteCall
    retrieve: RemoteCall
    decoder_wall_seconds: float
    prefill_seconds: float
    decode_seconds: float

    @property
    def other_seconds(self) -> float:
        return self.wall_seconds - self.tokenize.wall_seconds - self.retrieve.wall_seconds - self.decoder_wall_seconds

    def stage_seconds(self) -> dict[str, float]:
        return {"tokenize": self.tokenize.busy_seconds, "retrieve": self.retrieve.busy_seconds,
                "prefill": self.prefill_seconds, "decode": self.decode_seconds, "other": self.other_seconds}

    def tier_seconds(self) -> dict[str, float]:
        return {"gateway": self.other_seconds, "tokenizer": self.tokenize.busy_seconds,
                "retriever": self.retrieve.busy_seconds, "decoder": self.prefill_seconds + self.decode_seconds}


@dataclass(frozen=True)
class CostBreakdown:
    currency: str
    stages: dict[str, float]
    total: float

    def as_dict(self) -> dict:
        return {"currency": self.currency, "total": self.total, "stages": dict(self.stages)}


def attribute_costs(times: RequestTimes, rates: CostSettings) -> CostBreakdown:
    stages = {stage: seconds * rates.per_second(STAGE_TIER[stage])
              for stage, seconds in times.stage_seconds().items()}
    total = sum(seconds * rates.per_second(tier) for tier, seconds in times.tier_seconds().items())
    return CostBreakdown(rates.currency, stages, total)


def identity_violations(times: RequestTimes, cost: CostBreakdown, rates: CostSettings) -> list[str]:
    """Why this request's accounting does not add up; empty when it does."""
    reasons = []
    if not math.isclose(sum(cost.stages.values()), cost.total, rel_tol=rates.identity_tolerance, abs_tol=1e-15):
        reasons.append("sum_mismatch")
    slack = 1e-3  # clock granularity and the send of the last byte
    if times.other_seconds < -slack:
        reasons.append("stage_counted_twice")
    if times.other_seconds > rates.other_bound_seconds:
        reasons.append("stage_missing_timer")
    for call in (times.tokenize, times.retrieve):
        if call.busy_seconds > call.wall_seconds + slack:
            reasons.append("busy_exceeds_wall")
    if times.prefill_seconds + times.decode_seconds > times.decoder_wall_seconds + slack:
        reasons.append("busy_exceeds_wall")
    if any(value < 0 for stage, value in cost.stages.items() if stage != "other"):
        reasons.append("negative_stage")
    return sorted(set(reasons))


def cost_span_attributes(cost: CostBreakdown) -> dict[str, float | str]:
    attributes: dict[str, float | str] = {"lynx.cost.eur": cost.total, "lynx.cost.currency": cost.currency}
    attributes.update({f"lynx.cost.stage.{stage}.eur": value for stage, value in cost.stages.items()})
    return attributes


class CostRecorder:
    """Publishes one request's cost: histograms, counters, span attributes, the identity check."""

    def __init__(self, rates: CostSettings) -> None:
        self.rates = rates
        self.metrics = cost_metrics()
        # Every series exists from the start, so "zero violations" reads 0, not "no data".
        for reason in VIOLATION_REASONS:
            self.metrics.identity_violations.labels(reason)
        for stage in STAGES:
            self.metrics.stage.labels(stage)

    def record(self, times: RequestTimes, *, tenant: str, output_tokens: int, span: Span,
               trace_id: str) -> tuple[CostBreakdown, list[str]]:
        cost = attribute_costs(times, self.rates)
        violations = identity_violations(times, cost, self.rates)
        exemplar = {"trace_id": trace_id} if trace_id else None
        self.metrics.per_request.observe(cost.total, exemplar)
        for stage, value in cost.stages.items():
            self.metrics.stage.labels(stage).inc(max(value, 0.0))
        self.metrics.tenant.labels(tenant).inc(cost.total)
        if output_tokens:
            self.metrics.per_1k_output_tokens.observe(cost.total * 1000 / output_tokens, exemplar)
        span.set_attributes(cost_span_attributes(cost))
        for reason in violations:
            self.metrics.identity_violations.labels(reason).inc()
        if violations:
            log.warning("cost_identity_violation", extra={"fields": {
                "reasons": violations, "stage_seconds": times.stage_seconds(), "wall_seconds": times.wall_seconds}})
        span.set_attribute("lynx.cost.identity_ok", not violations)
        return cost, violations
