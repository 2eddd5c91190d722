"""The KV cache: preallocated buffers that the model reads its past from and writes its present into, in place.

One buffer per past input of the model, each ``[rows, kv_heads, width, head_size]``: a row per sequence,
``width`` (the context) positions per row. The model's GroupQueryAttention finds each row's length in the
attention mask, so rows of different lengths share one call as long as they are right-padded, and when one
buffer is bound as both past and present (onnxruntime-genai's share-buffer layout) it writes the new
tokens' keys and values at each row's own length: nothing is copied from one step to the next. A call runs
over consecutive rows (a view of the buffers), so the engine keeps its running sequences in rows
``[0, n)`` and closes the gaps finished sequences leave (``compaction``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEQ_AXIS = 2


@dataclass(frozen=True)
class KVPool:
    buffers: list[np.ndarray]  # one per past input, [rows, kv_heads, width, head_size]

    @classmethod
    def allocate(cls, count: int, rows: int, kv_heads: int, width: int, head_size: int, dtype: type) -> KVPool:
        # np.zeros maps untouched pages lazily: memory is committed as rows fill, not for the whole width at once.
        return cls([np.zeros((rows, kv_heads, width, head_size), dtype=dtype) for _ in range(count)])

    @property
    def rows(self) -> int:
        return self.buffers[0].shape[0]

    @property
    def width(self) -> int:
        return self.buffers[0].shape[SEQ_AXIS]

    def view(self, first_row: int, count: int) -> list[np.ndarray]:
        """Rows ``[first_row, first_row + count)`` of every buffer: contiguous, sharing the buffers' memory."""
        if first_row < 0 or count < 1 or first_row + count > self.rows:
            raise ValueError(f"rows [{first_row}, {first_row + count}) are outside the pool's {self.rows} rows")
        return [buffer[first_row:first_row + count] for buffer in self.buffers]

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of row ``source`` into row ``target``."""
        if source == target:
            return
        for buffer in self.buffers:
            buffer[target, :, :length] = buffer[source, :, :length]


def compaction(keep: list[bool]) -> tuple[list[int], list[tuple[int, int]]]:
    """How to gather the kept rows into ``[0, kept)`` with the fewest copies: the rows beyond the kept count fill
    the gaps below it. Returns, for each new row, the old row it holds, and the (source, target) moves."""
    kept = [row for row, keeping in enumerate(keep) if keeping]
    count = len(kept)
    gaps = [row for row in range(count) if not keep[row]]
    movers = [row for row in kept if row >= count]
    order = list(range(count))
    for gap, source in zip(gaps, movers, strict=True):
        order[gap] = source
    return order, list(zip(movers, gaps, strict=True))


def decode_attention_mask(lengths: list[int], past_width: int) -> np.ndarray:
    """Mask for one decode step: row i attends to its ``lengths[i]`` cached tokens plus the new one."""
    return (np.arange(past_width + 1) <= np.asarray(lengths)[:, None]).astype(np.int64)


def right_padded(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask for a prefill of several prompts."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = prompt
        mask[row, :len(prompt)] = 1
    return ids, mask
