"""Reading a folder of text, Markdown and HTML into passages (pure functions, no models)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
SKIPPED_HTML_TAGS = {"script", "style", "nav", "header", "footer", "head"}
CHUNK_WORDS = 120
CHUNK_OVERLAP_WORDS = 24
BLOCK_HTML_TAGS = {"p", "div", "li", "pre", "section", "h1", "h2", "h3", "h4", "h5", "h6", "dd", "dt", "tr", "br"}


@dataclass(frozen=True)
class Passage:
    id: str
    source: str
    text: str


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in SKIPPED_HTML_TAGS:
            self._skipping += 1
        elif tag in BLOCK_HTML_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_HTML_TAGS and self._skipping:
            self._skipping -= 1
        elif tag in BLOCK_HTML_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(html)
    return normalise_whitespace("".join(extractor.parts))


def normalise_whitespace(text: str) -> str:
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def chunk_words(text: str, size: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP_WORDS) -> list[str]:
    """Split into windows of ``size`` words that overlap by ``overlap`` words."""
    if not 0 <= overlap < size:
        raise ValueError("overlap must be at least 0 and smaller than size")
    words = text.split()
    step = size - overlap
    return [" ".join(words[start:start + size]) for start in range(0, max(len(words) - overlap, 1), step)
            if words[start:start + size]]


def read_document(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    return html_to_text(raw) if path.suffix.lower() in HTML_SUFFIXES else normalise_whitespace(raw)


def iter_passages(root: Path, size: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP_WORDS) -> Iterator[Passage]:
    """Every passage of every readable file under ``root``, in a stable order."""
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() not in TEXT_SUFFIXES | HTML_SUFFIXES:
            continue
        source = path.relative_to(root).as_posix()
        for number, chunk in enumerate(chunk_words(read_document(path), size, overlap)):
            yield Passage(id=f"{source}#{number}", source=source, text=chunk)
