"""A stand-in for DecoderModel with the same interface: deterministic tokens, a tiny KV cache, timed calls.

The next token after ``t`` is ``t + 1`` (wrapping below the vocabulary), so every sequence's output
follows from its prompt; each call sleeps a fixed time so the engine's clocks have something to measure.
"""

from __future__ import annotations

import time

import numpy as np

from lynx.decoder.kv import right_padded

VOCAB = 64
EOS = 0
LAYERS = 2


class FakeModel:
    eos_token_id = EOS
    pad_token_id = EOS
    vocab_size = VOCAB
    context_length = 4096

    def __init__(self, prefill_seconds: float = 0.002, step_seconds: float = 0.002) -> None:
        self.prefill_seconds = prefill_seconds
        self.step_seconds = step_seconds
        self.calls: list[tuple[str, int]] = []  # ("prefill" | "extend" | "decode", rows)
        self.fail_prefill_of: set[int] = set()  # prompts whose first token makes prefill raise
        self.nan_after: set[int] = set()  # tokens whose next-token logits come out NaN (a numerically broken row)

    def _logits(self, last_tokens: list[int]) -> np.ndarray:
        logits = np.zeros((len(last_tokens), VOCAB), dtype=np.float32)
        for row, token in enumerate(last_tokens):
            logits[row, 1 + token % (VOCAB - 1)] = 1.0
            if token in self.nan_after:
                logits[row] = np.nan
        return logits

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.calls.append(("prefill", len(prompts)))
        if any(p[0] in self.fail_prefill_of for p in prompts):
            raise RuntimeError("prefill failed (planted)")
        time.sleep(self.prefill_seconds)
        ids, _ = right_padded(prompts, self.pad_token_id)
        cache = [np.ones((len(prompts), 1, ids.shape[1], 1), dtype=np.float32) for _ in range(LAYERS)]
        return self._logits([p[-1] for p in prompts]), cache

    def extend(self, ids: list[int], past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.calls.append(("extend", 1))
        time.sleep(self.prefill_seconds)
        grown = [np.concatenate([layer, np.ones((1, 1, len(ids), 1), dtype=layer.dtype)], axis=2) for layer in past]
        return self._logits([ids[-1]]), grown

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.calls.append(("decode", input_ids.shape[0]))
        time.sleep(self.step_seconds)
        grown = [np.concatenate([layer, np.ones((layer.shape[0], 1, 1, 1), dtype=layer.dtype)], axis=2)
                 for layer in past]
        return self._logits(input_ids[:, -1].tolist())[:, None, :], grown
