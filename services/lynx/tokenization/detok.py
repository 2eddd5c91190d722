"""Incremental detokenisation: text deltas for a growing list of token ids.

Decoding token by token breaks multi-byte characters and merges spaces wrongly, so each
step decodes a short window of recent ids and emits only what became stable.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT_CHAR = "\ufffd"
WINDOW_LOOKBACK = 6


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (may be empty while a character is partial)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix_offset:self._read_offset])
        full_text = self._decode(self.ids[self._prefix_offset:])
        if full_text.endswith(REPLACEMENT_CHAR) or len(full_text) <= len(prefix_text):
            return ""
        delta = full_text[len(prefix_text):]
        self._read_offset = len(self.ids)
        self._prefix_offset = max(0, self._read_offset - WINDOW_LOOKBACK)
        return delta
