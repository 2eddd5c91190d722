"""How one batched decode step's measured wall time is split between the sequences in it.

Measured on the int4 model (docs/COSTS.md, scripts/bench_step_cost.py), a step costs

    fixed + per_row x rows + per_context_token x sum(contexts) + per_padded_token x rows x width

where width is the longest row's context: the KV cache is right-padded, so every row is copied at
that width. Each row pays an equal share of the fixed part (the weights are read once per step),
its own per-row and per-context-token cost, and the padded copy of its own length; the padding the
longest row forces on the others is paid by the longest row (shared if several are longest). So a
request's price depends on its own prompt and output, not on a neighbour's, and the shares add up
to exactly what the step took.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCostModel:
    fixed_seconds: float
    per_row_seconds: float
    per_context_token_seconds: float
    per_padded_token_seconds: float = 0.0

    def predict(self, contexts: list[int]) -> float:
        return (self.fixed_seconds + self.per_row_seconds * len(contexts)
                + self.per_context_token_seconds * sum(contexts)
                + self.per_padded_token_seconds * len(contexts) * max(contexts, default=0))

    def weights(self, contexts: list[int]) -> list[float]:
        """Each row's part of ``predict(contexts)``, per the rule above."""
        width = max(contexts)
        longest = [length == width for length in contexts]
        padding = self.per_padded_token_seconds * sum(width - length for length in contexts) / sum(longest)
        own = self.per_context_token_seconds + self.per_padded_token_seconds
        return [self.fixed_seconds / len(contexts) + self.per_row_seconds + own * length + (padding if is_longest else 0.0)
                for length, is_longest in zip(contexts, longest, strict=True)]


def step_shares(elapsed: float, contexts: list[int], model: StepCostModel) -> list[float]:
    """Each row's share of ``elapsed``; the shares sum to ``elapsed`` (the last row takes the rounding)."""
    if not contexts:
        return []
    weights = model.weights(contexts)
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(contexts), float(len(contexts))
    shares = [elapsed * weight / total for weight in weights[:-1]]
    return [*shares, elapsed - sum(shares)]
