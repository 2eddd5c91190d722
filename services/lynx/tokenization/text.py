"""Tokenisation and the chat template, loaded from the converted decoder's folder.

Only the chat template writes special tokens. Message content and completion prompts are plain
text: a user who types `<|im_end|>` sends those ten characters, never the end-of-turn marker, so
no one can close their turn and open a system turn from inside a message.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from lynx.contracts.tokenizer import ChatMessage


class ModelTokenizer:
    """The decoder model's tokenizer and chat template (ChatML for SmolLM2); safe to share between threads."""

    def __init__(self, model_dir: Path) -> None:
        tokenizer_file = model_dir / "tokenizer.json"
        template_file = model_dir / "chat_template.jinja"
        for required in (tokenizer_file, template_file):
            if not required.is_file():
                raise FileNotFoundError(f"{required} is missing: run `lynx models build` first")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # Set once, before any thread uses it, never toggled: every encode reads special-token strings as
        # text. The template's markers are mapped to their ids below instead of being parsed out of text.
        self.tokenizer.encode_special_tokens = True
        self.markers = {token.content: token_id for token_id, token in self.tokenizer.get_added_tokens_decoder().items()
                        if token.special}
        longest_first = sorted(self.markers, key=len, reverse=True)
        self._marker_pattern = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if self.markers else None
        self.template = ImmutableSandboxedEnvironment().from_string(template_file.read_text())

    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids: special-token strings in ``text`` are characters, not markers."""
        # The batch call releases the GIL while it works (encode() holds it), so other threads run meanwhile.
        return self.tokenizer.encode_batch([text], add_special_tokens=False)[0].ids if text else []

    def encode_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
        """The chat template's ids, in which only the template's own markers are special tokens.

        The template is rendered with a random placeholder for each message's content, so no content
        goes through the template or the marker parser; each content then joins the template text around
        it as plain text. Text between two markers is encoded as one piece, as encoding the whole rendered
        string does, so a conversation without typed markers gets exactly the ids it got that way.
        """
        nonce = secrets.token_hex(8)
        contents = {f"[[lynx-content-{nonce}-{number}]]": message.content for number, message in enumerate(messages)}
        skeleton = self.template.render(
            messages=[{"role": m.role, "content": p} for m, p in zip(messages, contents, strict=True)],
            add_generation_prompt=add_generation_prompt)
        if missing := [p for p in contents if p not in skeleton]:
            raise ValueError(f"the chat template did not place {len(missing)} message content(s) verbatim")
        ids: list[int] = []
        text_run: list[str] = []
        pieces = re.split("(" + "|".join(map(re.escape, contents)) + ")", skeleton) if contents else [skeleton]
        for piece in pieces:
            if piece in contents:
                text_run.append(contents[piece])
                continue
            parts = self._marker_pattern.split(piece) if self._marker_pattern else [piece]
            for index, part in enumerate(parts):
                if index % 2:  # split() puts the captured markers at odd positions
                    ids += self.encode_text("".join(text_run))
                    text_run.clear()
                    ids.append(self.markers[part])
                else:
                    text_run.append(part)
        return ids + self.encode_text("".join(text_run))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode_batch([ids], skip_special_tokens=True)[0]  # releases the GIL, as above

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()
