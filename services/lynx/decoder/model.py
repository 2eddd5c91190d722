"""The ONNX decoder (onnxruntime-genai's export): prefill and decode calls on right-padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lynx.decoder.kv import right_padded


class DecoderModel:
    def __init__(self, model_dir: Path, threads: int, spin_wait: bool = True) -> None:
        config_file = model_dir / "genai_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing: run `lynx models build` first")
        config = json.loads(config_file.read_text())["model"]
        decoder = config["decoder"]
        self.num_layers = decoder["num_hidden_layers"]
        self.kv_heads = decoder["num_key_value_heads"]
        self.head_size = decoder["head_size"]
        self.eos_token_id = config["eos_token_id"]
        self.pad_token_id = config.get("pad_token_id", self.eos_token_id)
        self.context_length = config["context_length"]
        self.vocab_size = config["vocab_size"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning keeps threads hot between the engine's back-to-back steps (~25% more tokens/s
        # measured here); switch it off where the decoder shares its cores with other busy work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        self.session = ort.InferenceSession(str(model_dir / decoder["filename"]), options,
                                            providers=["CPUExecutionProvider"])
        self.past_names = [f"past_key_values.{layer}.{kind}" for layer in range(self.num_layers)
                           for kind in ("key", "value")]
        self.output_names = ["logits"] + [f"present.{layer}.{kind}" for layer in range(self.num_layers)
                                          for kind in ("key", "value")]
        dtype = self.session.get_inputs()[2].type
        self.kv_dtype = np.float16 if "float16" in dtype else np.float32

    def empty_cache(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_size)
        return [np.zeros(shape, dtype=self.kv_dtype) for _ in self.past_names]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass; returns logits of the last position of every row and the new cache."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, **dict(zip(self.past_names, past, strict=True))}
        outputs = self.session.run(self.output_names, feeds)
        return outputs[0], outputs[1:]

    def extend(self, ids: list[int], past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One sequence's next prompt chunk after its cache ``past`` (batch of one): logits at the chunk's last token
        ([1, vocab]) and the longer cache."""
        width = past[0].shape[2] + len(ids)
        logits, cache = self.run(np.array([ids], dtype=np.int64), np.ones((1, width), dtype=np.int64), past)
        return logits[:, -1], cache

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits at each prompt's last token ([batch, vocab]) and the prompts' cache."""
        ids, mask = right_padded(prompts, self.pad_token_id)
        logits, cache = self.run(ids, mask, self.empty_cache(len(prompts)))
        last = np.array([len(p) - 1 for p in prompts])
        return logits[np.arange(len(prompts)), last], cache
