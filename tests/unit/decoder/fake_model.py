"""A stand-in for DecoderModel with the same interface: deterministic tokens, a tiny KV pool, timed calls.

The next token after ``t`` is ``t + 1`` (wrapping below the vocabulary), so every sequence's output
follows from its prompt; each call sleeps a fixed time so the engine's clocks have something to measure.
The "cache" it writes is the token ids themselves (stored as id + 1, so 0 means empty), and every
decode step checks each row against it: the row holds its whole context, and the token fed is the one
that follows the row's last cached token. A row the engine moved wrongly, or lost, fails the step.
"""

from __future__ import annotations

import time

import numpy as np

from lynx.decoder.kv import KVPool

VOCAB = 64
EOS = 0
LAYERS = 2


def next_after(token: int) -> int:
    return 1 + token % (VOCAB - 1)


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
            logits[row, next_after(token)] = 1.0
            if token in self.nan_after:
                logits[row] = np.nan
        return logits

    def kv_pool(self, rows: int, width: int) -> KVPool:
        return KVPool.allocate(LAYERS, rows, 1, width, 1, np.float32)

    @staticmethod
    def _write(pool: KVPool, row: int, start: int, ids: list[int]) -> None:
        for buffer in pool.buffers:
            buffer[row, 0, start:start + len(ids), 0] = np.asarray(ids) + 1

    @staticmethod
    def _cached(pool: KVPool, row: int, length: int) -> np.ndarray:
        return pool.buffers[0][row, 0, :length, 0].astype(int) - 1

    def prefill_rows(self, pool: KVPool, first_row: int, prompts: list[list[int]]) -> np.ndarray:
        self.calls.append(("prefill", len(prompts)))
        if any(p[0] in self.fail_prefill_of for p in prompts):
            raise RuntimeError("prefill failed (planted)")
        time.sleep(self.prefill_seconds)
        pool.view(first_row, len(prompts))  # the rows exist
        for row, prompt in enumerate(prompts, start=first_row):
            self._write(pool, row, 0, prompt)
        return self._logits([p[-1] for p in prompts])

    def extend_row(self, pool: KVPool, row: int, past_length: int, ids: list[int]) -> np.ndarray:
        self.calls.append(("extend", 1))
        time.sleep(self.prefill_seconds)
        if (self._cached(pool, row, past_length) < 0).any():
            raise AssertionError(f"row {row} lacks part of its first {past_length} prompt tokens")
        self._write(pool, row, past_length, ids)
        return self._logits([ids[-1]])[0]

    def decode_rows(self, pool: KVPool, tokens: list[int], lengths: list[int]) -> np.ndarray:
        self.calls.append(("decode", len(tokens)))
        time.sleep(self.step_seconds)
        for row, (token, length) in enumerate(zip(tokens, lengths, strict=True)):
            cached = self._cached(pool, row, length)
            if (cached < 0).any() or next_after(int(cached[-1])) != token:
                raise AssertionError(f"row {row} holds {cached.tolist()}, which {token} does not follow")
            self._write(pool, row, length, [token])
        return self._logits(tokens)
