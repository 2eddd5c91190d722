"""The running batch's KV cache: right-padded arrays, one row per sequence (pure numpy).

The model's GroupQueryAttention reads each row's length from the attention mask, so rows of
different lengths share one batch as long as they are right-padded: row i's cache is valid
in ``[:, :, :lengths[i], :]`` and the rest is padding.
"""

from __future__ import annotations

import numpy as np

SEQ_AXIS = 2


def pad_to_width(cache: list[np.ndarray], width: int) -> list[np.ndarray]:
    current = cache[0].shape[SEQ_AXIS]
    if current == width:
        return cache
    padding = [(0, 0)] * cache[0].ndim
    padding[SEQ_AXIS] = (0, width - current)
    return [np.pad(layer, padding) for layer in cache]


def join(running: list[np.ndarray] | None, joining: list[np.ndarray]) -> list[np.ndarray]:
    """Append the joining rows below the running ones, padding both to the wider cache."""
    if running is None:
        return joining
    width = max(running[0].shape[SEQ_AXIS], joining[0].shape[SEQ_AXIS])
    running, joining = pad_to_width(running, width), pad_to_width(joining, width)
    return [np.concatenate(pair, axis=0) for pair in zip(running, joining, strict=True)]


def keep_rows(cache: list[np.ndarray], rows: list[int], lengths: list[int]) -> list[np.ndarray] | None:
    """Only the given rows, trimmed to the longest remaining sequence; None when no row is left."""
    if not rows:
        return None
    width = max(lengths)
    index = np.asarray(rows)
    return [np.ascontiguousarray(layer[index, :, :width, :]) for layer in cache]


def decode_attention_mask(lengths: list[int], past_width: int) -> np.ndarray:
    """Mask for one decode step: row i attends to its ``lengths[i]`` cached tokens plus the new one."""
    mask = np.zeros((len(lengths), past_width + 1), dtype=np.int64)
    for row, length in enumerate(lengths):
        mask[row, :length + 1] = 1
    return mask


def right_padded(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask for a prefill of several prompts."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = prompt
        mask[row, :len(prompt)] = 1
    return ids, mask
