"""How one batched decode step's measured wall time is split between the sequences in it.

A step costs a fixed part (reading the weights once, launching the graph), a part per row, and
a part that grows with each row's context (attention over its KV cache); docs/COSTS.md has the
measurement behind the coefficients. Each sequence pays an equal share of the fixed part plus
its own marginal cost, scaled so the shares add up to exactly what the step took.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCostModel:
    fixed_seconds: float
    per_row_seconds: float
    per_context_token_seconds: float

    def predict(self, contexts: list[int]) -> float:
        return self.fixed_seconds + self.per_row_seconds * len(contexts) + self.per_context_token_seconds * sum(contexts)


def step_shares(elapsed: float, contexts: list[int], model: StepCostModel) -> list[float]:
    """Each row's share of ``elapsed``; the shares sum to ``elapsed`` (the last row takes the rounding)."""
    if not contexts:
        return []
    fixed = model.fixed_seconds / len(contexts)
    weights = [fixed + model.per_row_seconds + model.per_context_token_seconds * length for length in contexts]
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(contexts), float(len(contexts))
    shares = [elapsed * weight / total for weight in weights[:-1]]
    return [*shares, elapsed - sum(shares)]
