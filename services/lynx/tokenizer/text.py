"""Tokenisation and the chat template, loaded from the converted decoder's folder."""

from __future__ import annotations

from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


class ModelTokenizer:
    """The decoder model's tokenizer and chat template (ChatML for SmolLM2)."""

    def __init__(self, model_dir: Path) -> None:
        tokenizer_file = model_dir / "tokenizer.json"
        template_file = model_dir / "chat_template.jinja"
        for required in (tokenizer_file, template_file):
            if not required.is_file():
                raise FileNotFoundError(f"{required} is missing: run `lynx models build` first")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.template = ImmutableSandboxedEnvironment().from_string(template_file.read_text())

    def encode(self, text: str) -> list[int]:
        # Special tokens in the text (<|im_start|> from the template) map to their ids.
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()
