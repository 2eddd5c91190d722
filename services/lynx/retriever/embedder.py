"""all-MiniLM-L6-v2 in onnxruntime: pooled, L2-normalised 384-d sentence embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_TOKENS = 256


class Embedder:
    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        model_file = model_dir / "model.onnx"
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file} is missing: run `lynx models build` first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        self.dimension = int(self.session.get_outputs()[0].shape[-1] or 384)

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        batches = [self._embed_batch(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(batches) if batches else np.zeros((0, self.dimension), np.float32)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }
        return self.session.run(None, feeds)[0].astype(np.float32)
