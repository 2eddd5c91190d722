"""The passage index: an HNSW graph (faiss) over normalised embeddings, persisted to a folder."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from lynx.retriever.corpus import Passage

INDEX_FILE = "passages.faiss"
PASSAGES_FILE = "passages.jsonl"
MANIFEST_FILE = "manifest.json"
HNSW_NEIGHBOURS = 32


class PassageIndex:
    def __init__(self, index: faiss.Index, passages: list[Passage]) -> None:
        if index.ntotal != len(passages):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(passages)} passages")
        self.index = index
        self.passages = passages

    @classmethod
    def build(cls, passages: list[Passage], vectors: np.ndarray) -> PassageIndex:
        index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, passages)

    def search(self, query: np.ndarray, top_k: int) -> list[tuple[Passage, float]]:
        self.index.hnsw.efSearch = max(64, top_k * 2)
        scores, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), top_k)
        return [(self.passages[i], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def save(self, folder: Path, manifest: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(folder / INDEX_FILE))
        with (folder / PASSAGES_FILE).open("w", encoding="utf-8") as out:
            for passage in self.passages:
                out.write(json.dumps(asdict(passage)) + "\n")
        (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "passages": len(self.passages)}, indent=2))

    @classmethod
    def load(cls, folder: Path) -> PassageIndex:
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"no index in {folder}: run `lynx ingest` first")
        with (folder / PASSAGES_FILE).open(encoding="utf-8") as lines:
            passages = [Passage(**json.loads(line)) for line in lines]
        return cls(faiss.read_index(str(folder / INDEX_FILE)), passages)


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_FILE).read_text())
