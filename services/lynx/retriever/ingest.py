"""Build the passage index from a folder of documents."""

from __future__ import annotations

import time
from pathlib import Path

from lynx.retriever.corpus import CHUNK_OVERLAP_WORDS, CHUNK_WORDS, iter_passages
from lynx.retriever.embedder import Embedder
from lynx.retriever.index import PassageIndex

# Debian's python3.11-doc: the Python tutorial reads well and ships as a package.
DEFAULT_CORPUS = Path("/usr/share/doc/python3.11/html/tutorial")


def current_chunking() -> dict[str, int]:
    return {"words": CHUNK_WORDS, "overlap": CHUNK_OVERLAP_WORDS}


def ingest(corpus: Path, index_dir: Path, embedder_dir: Path, threads: int = 2) -> dict:
    started = time.monotonic()
    passages = list(iter_passages(corpus))
    if not passages:
        raise ValueError(f"no .txt, .md or .html text found under {corpus}")
    embedder = Embedder(embedder_dir, threads=threads)
    vectors = embedder.embed([p.text for p in passages])
    manifest = {"corpus": str(corpus), "embedder": str(embedder_dir), "dimension": int(vectors.shape[1]),
                "chunking": current_chunking()}
    PassageIndex.build(passages, vectors).save(index_dir, manifest)
    return {**manifest, "passages": len(passages), "seconds": round(time.monotonic() - started, 1)}
