"""How one batched decode step's measured wall time is split between the sequences in it.

Measured on the int4 model (docs/COSTS.md, scripts/bench_step_cost.py), a step costs

    fixed + per_row x rows + per_context_token x sum(contexts)

Each row pays an equal share of the fixed part (the weights are read once per step), and its own
per-row and per-context-token cost (attention over its own cache, which the model reads and writes in
place: no row is padded to or copied at another's length). So a request's price depends on its own
prompt and output, not on a neighbour's, and the shares add up to exactly what the step took.

The coefficients are the decoder's settings (LYNX_DECODER_STEP_*), read here by both sides: the decoder splits its
steps by them, the gateway estimates a request's worst case by them (lynx.accounting.pricing.SoloDecoder).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class StepCostModel:
    fixed_seconds: float
    per_row_seconds: float
    per_context_token_seconds: float

    def predict(self, contexts: list[int]) -> float:
        return self.fixed_seconds + self.per_row_seconds * len(contexts) + self.per_context_token_seconds * sum(contexts)

    def weights(self, contexts: list[int]) -> list[float]:
        """Each row's part of ``predict(contexts)``, per the rule above."""
        return [self.fixed_seconds / len(contexts) + self.per_row_seconds + self.per_context_token_seconds * length
                for length in contexts]


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


class StepCostSettings(BaseSettings):
    """The step cost model's coefficients, defaults measured on the int4 model with scripts/bench_step_cost.py
    (docs/COSTS.md). The decoder's settings include them; the gateway reads them alone."""

    model_config = SettingsConfigDict(env_prefix="LYNX_DECODER_", extra="ignore", frozen=True)

    step_fixed_seconds: float = Field(default=0.003174, ge=0, description="Step cost shared evenly by its rows.")
    step_row_seconds: float = Field(default=0.001360, ge=0, description="Step cost each row adds.")
    step_context_token_seconds: float = Field(
        default=3.46e-6, ge=0, description="Step cost each token of a row's own context adds.")

    def step_cost(self) -> StepCostModel:
        return StepCostModel(self.step_fixed_seconds, self.step_row_seconds, self.step_context_token_seconds)
