"""Choosing the next token from logits: greedy, or temperature with nucleus (top-p) sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The nucleus almost always lies within the few hundred most likely tokens: look there first
# and fall back to a full sort only when it does not.
NUCLEUS_CANDIDATES = 256


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature), shifted before it is scaled: a temperature near zero sends every logit
    but the largest to -inf (probability 0), never to inf - inf (NaN)."""
    with np.errstate(over="ignore"):
        shifted = np.exp((logits - logits.max()) / temperature)
    return shifted / shifted.sum()


def nucleus(probabilities: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and renormalised probabilities of the smallest set whose mass reaches top_p."""
    count = min(NUCLEUS_CANDIDATES, probabilities.size)
    candidates = np.argpartition(-probabilities, count - 1)[:count]
    if probabilities[candidates].sum() < top_p and count < probabilities.size:
        candidates = np.arange(probabilities.size)
    ordered = candidates[np.argsort(-probabilities[candidates], kind="stable")]
    cumulative = np.cumsum(probabilities[ordered])
    keep = int(np.searchsorted(cumulative, top_p * cumulative[-1]) + 1)
    chosen = ordered[:keep]
    mass = probabilities[chosen]
    return chosen, mass / mass.sum()


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    if params.greedy:
        return int(np.argmax(logits))
    probabilities = softmax(logits.astype(np.float64), params.temperature)
    if params.top_p >= 1.0:
        return int(rng.choice(probabilities.size, p=probabilities))
    ids, weights = nucleus(probabilities, params.top_p)
    return int(rng.choice(ids, p=weights))
