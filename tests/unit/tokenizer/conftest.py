"""The real decoder tokenizer (built by `lynx models build`), and a stock copy of it as the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from lynx.tools.models.cache import is_built, models_dir
from lynx.tokenization.text import ModelTokenizer


@pytest.fixture(scope="session")
def decoder_dir() -> Path:
    out = models_dir()
    if not is_built(out):
        pytest.fail(f"models are not built in {out}: run scripts/test.sh (it runs `lynx models build`)")
    return out / "decoder"


@pytest.fixture(scope="session")
def model_tokenizer(decoder_dir: Path) -> ModelTokenizer:
    return ModelTokenizer(decoder_dir)


@pytest.fixture(scope="session")
def stock_tokenizer(decoder_dir: Path) -> Tokenizer:
    """tokenizer.json as `tokenizers` loads it: special-token strings in the input become markers."""
    return Tokenizer.from_file(str(decoder_dir / "tokenizer.json"))
