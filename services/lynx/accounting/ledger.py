"""The ledger: the one call every request that entered the pipeline ends in, whatever its outcome.

``Ledger.charge`` prices the request (pricing.py), checks its identity, and publishes the one
result everywhere it is read: the tenant's cost counter, the token counters, the cost
histograms, the request span's attributes, one ``cost_identity_violation`` log event per failed
check (lynx.accounting.identity) and one ``request_finished`` / ``request_failed`` log event. It is
synchronous and cannot be cancelled half-way, so it can run before any cleanup that awaits.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from opentelemetry.trace import Span

from lynx.accounting.identity import VIOLATION_REASONS, Violation, identity_violations, reasons
from lynx.accounting.pricing import (
    STAGES, CostBreakdown, CostSettings, RequestTimes, attribute_costs, cost_span_attributes,
)
from lynx.telemetry.metrics import OUTCOMES, cost_metrics, generation_metrics

log = logging.getLogger("lynx.ledger")


@dataclass(frozen=True)
class Charge:
    """Everything the ledger needs about one request."""

    tenant: str
    model: str
    outcome: str  # one of OUTCOMES
    times: RequestTimes
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    trace_id: str
    request_id: str
    error: str | None = None
    # A 4xx after charging began (a worst case the budget has no room for, a prompt past the context): the request
    # failed through no fault of lynx's.
    client_refusal: bool = False

    @property
    def is_error(self) -> bool:
        """Failed on lynx's side or out of time: what the per-model error alert counts."""
        return self.outcome in ("failed", "deadline") and not self.client_refusal


@dataclass(frozen=True)
class Settlement:
    cost: CostBreakdown
    violations: list[Violation]

    @property
    def identity_ok(self) -> bool:
        return not self.violations


class Ledger:
    def __init__(self, rates: CostSettings) -> None:
        self.rates = rates
        self.metrics = cost_metrics()
        self.tokens = generation_metrics().tokens
        # Every series exists from the start, so "zero violations" reads 0, not "no data".
        for reason in VIOLATION_REASONS:
            self.metrics.identity_violations.labels(reason)
        for stage in STAGES:
            self.metrics.stage.labels(stage)

    def serves(self, model: str) -> None:
        """Creates the model's request counters at 0, so that its first failure is an increase, not a new series."""
        for outcome in OUTCOMES:
            self.metrics.charged_requests.labels(model, outcome)
        self.metrics.charged_request_errors.labels(model)

    def charge(self, charge: Charge, span: Span) -> Settlement:
        if charge.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {charge.outcome!r}")
        cost = attribute_costs(charge.times, self.rates)
        violations = identity_violations(charge.times, self.rates)
        self._count(charge, cost, violations)
        span.set_attributes({
            **cost_span_attributes(cost),
            "lynx.outcome": charge.outcome,
            "lynx.cost.identity_ok": not violations,
            "gen_ai.usage.input_tokens": charge.prompt_tokens,
            "gen_ai.usage.output_tokens": charge.completion_tokens,
        })
        self._log(charge, cost, violations)
        return Settlement(cost, violations)

    def _count(self, charge: Charge, cost: CostBreakdown, violations: list[Violation]) -> None:
        metrics = self.metrics
        exemplar = {"trace_id": charge.trace_id} if charge.trace_id else None
        metrics.per_request.observe(cost.total, exemplar)
        for stage, value in cost.stages.items():
            metrics.stage.labels(stage).inc(max(value, 0.0))
        metrics.tenant.labels(charge.tenant, charge.model, charge.outcome).inc(max(cost.total, 0.0))
        metrics.charged_requests.labels(charge.model, charge.outcome).inc()
        if charge.is_error:
            metrics.charged_request_errors.labels(charge.model).inc()
        for kind, tokens in (("prompt", charge.prompt_tokens), ("completion", charge.completion_tokens)):
            self.tokens.labels(tenant=charge.tenant, kind=kind, model_name=charge.model, outcome=charge.outcome).inc(
                tokens)
        if charge.completion_tokens:
            metrics.per_1k_output_tokens.observe(cost.total * 1000 / charge.completion_tokens, exemplar)
        for reason in reasons(violations):  # requests that failed the check, not checks failed
            metrics.identity_violations.labels(reason).inc()

    @staticmethod
    def _log(charge: Charge, cost: CostBreakdown, violations: list[Violation]) -> None:
        request = {"tenant": charge.tenant, "request_id": charge.request_id, "trace_id": charge.trace_id,
                   "model": charge.model}
        for violation in violations:
            log.warning("cost_identity_violation", extra={"fields": {**request, **asdict(violation)}})
        fields = {
            **request, "outcome": charge.outcome, "finish_reason": charge.finish_reason,
            "prompt_tokens": charge.prompt_tokens, "completion_tokens": charge.completion_tokens,
            "cost_eur": cost.total, "duration_s": charge.times.wall_seconds,
            "stage_seconds": charge.times.stage_seconds(),
        }
        if charge.error:
            fields["error"] = charge.error
        if violations:
            fields.update({"identity_violations": reasons(violations),
                           "untimed_seconds": charge.times.wall_seconds - charge.times.timed_seconds,
                           "interrupted_untimed_seconds": charge.times.interrupted_seconds})
        log.info("request_finished" if charge.outcome == "completed" else "request_failed",
                 extra={"fields": fields})
