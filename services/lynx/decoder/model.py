"""The ONNX decoder (onnxruntime-genai's export): prefill, prompt-chunk and decode calls on right-padded batches.

The serving calls (``prefill_rows``, ``extend_row``, ``decode_rows``) read and write a ``KVPool`` in place through
onnxruntime's I/O binding. ``run`` and ``prefill`` are the plain path, which takes the cache as inputs and returns a
grown copy of it each call: the benchmarks' raw loop, and what the in-place path is proven equal to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lynx.decoder.kv import KVPool, decode_attention_mask, right_padded


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
        self.present_names = [f"present.{layer}.{kind}" for layer in range(self.num_layers) for kind in ("key", "value")]
        self.output_names = ["logits", *self.present_names]
        # Built models gather the positions whose logits a call wants before the output layer
        # (lynx.tools.models.logits_positions); models built before that run it on every position.
        self.selects_logits = any(i.name == "logits_positions" for i in self.session.get_inputs())
        dtype = self.session.get_inputs()[2].type
        self.kv_dtype = np.float16 if "float16" in dtype else np.float32
        # Decode steps over rows [0, n) of one pool reuse the binding of their cache and logits (keyed by n).
        self._decode_bindings: dict[int, ort.IOBinding] = {}
        self._decode_pool: KVPool | None = None
        self._decode_logits: np.ndarray | None = None
        self._decode_positions: np.ndarray | None = None

    # --- in place, on a KVPool --------------------------------------------------------------
    def kv_pool(self, rows: int, width: int) -> KVPool:
        return KVPool.allocate(len(self.past_names), rows, self.kv_heads, width, self.head_size, self.kv_dtype)

    def prefill_rows(self, pool: KVPool, first_row: int, prompts: list[list[int]]) -> np.ndarray:
        """Whole prompts into rows ``first_row``... of ``pool`` (one call, right-padded): each prompt's logits at its
        last token ([prompts, vocab])."""
        ids, mask = right_padded(prompts, self.pad_token_id)
        lasts = [len(p) - 1 for p in prompts]
        return self._at(self._run_in_place(ids, mask, pool, first_row, self._positions(lasts)), lasts)

    def extend_row(self, pool: KVPool, row: int, past_length: int, ids: list[int]) -> np.ndarray:
        """The next chunk of one prompt, after the ``past_length`` positions row ``row`` already holds: the logits at
        the chunk's last token ([vocab])."""
        mask = np.ones((1, past_length + len(ids)), dtype=np.int64)
        return self._run_in_place(np.array([ids], dtype=np.int64), mask, pool, row, self._positions([len(ids) - 1]))[0, -1]

    def decode_rows(self, pool: KVPool, tokens: list[int], lengths: list[int]) -> np.ndarray:
        """One decode step of rows ``[0, len(tokens))``: row i feeds ``tokens[i]`` after its ``lengths[i]`` cached
        positions. The next-token logits, [rows, vocab] (a view, valid until the next step)."""
        rows = len(tokens)
        binding = self._decode_binding(pool, rows)
        ids = np.array(tokens, dtype=np.int64).reshape(rows, 1)
        mask = decode_attention_mask(lengths, max(lengths))
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        self.session.run_with_iobinding(binding)
        return self._decode_logits[:rows, 0]

    def _decode_binding(self, pool: KVPool, rows: int) -> ort.IOBinding:
        if pool is not self._decode_pool:
            self._decode_pool, self._decode_bindings = pool, {}
            self._decode_logits = np.zeros((pool.rows, 1, self.vocab_size), dtype=np.float32)
            self._decode_positions = np.zeros((pool.rows, 1), dtype=np.int64)
        binding = self._decode_bindings.get(rows)
        if binding is None:
            binding = self.session.io_binding()
            self._bind_array(binding, "logits", self._decode_logits[:rows], output=True)
            if self.selects_logits:  # the one new token of each row: position 0, the same every step
                self._bind_array(binding, "logits_positions", self._decode_positions[:rows], output=False)
            self._bind_cache(binding, pool, 0, rows)
            self._decode_bindings[rows] = binding
        return binding

    def _positions(self, lasts: list[int]) -> np.ndarray | None:
        """The ``logits_positions`` input asking for one position per row, for a model that takes it."""
        return np.array(lasts, dtype=np.int64).reshape(-1, 1) if self.selects_logits else None

    def _at(self, logits: np.ndarray, lasts: list[int]) -> np.ndarray:
        """Each row's logits at its position in ``lasts`` ([rows, vocab]), from a call that asked for them."""
        return logits[:, 0] if self.selects_logits else logits[np.arange(len(lasts)), lasts]

    def _run_in_place(self, ids: np.ndarray, mask: np.ndarray, pool: KVPool, first_row: int,
                      positions: np.ndarray | None) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_output("logits", "cpu")  # first: get_outputs() lists the outputs in the order they were bound
        self._bind_cache(binding, pool, first_row, ids.shape[0])
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if positions is not None:
            binding.bind_cpu_input("logits_positions", positions)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    def _bind_cache(self, binding: ort.IOBinding, pool: KVPool, first_row: int, rows: int) -> None:
        """Bind the past and the present of every layer to the same rows of the pool (share-buffer): the model
        writes each row's new keys and values after its length, in place."""
        for past, present, buffer in zip(self.past_names, self.present_names, pool.view(first_row, rows), strict=True):
            self._bind_array(binding, past, buffer, output=False)
            self._bind_array(binding, present, buffer, output=True)

    @staticmethod
    def _bind_array(binding: ort.IOBinding, name: str, array: np.ndarray, output: bool) -> None:
        """Bind the array's own memory (no copy); it must stay alive as long as the binding is used."""
        bind = binding.bind_output if output else binding.bind_input
        bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    # --- the plain path: the cache in, a grown copy out -------------------------------------
    def empty_cache(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_size)
        return [np.zeros(shape, dtype=self.kv_dtype) for _ in self.past_names]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray],
            positions: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass; returns the logits of every position of every row (on a model that selects them and
        given ``positions`` [rows, n], of those only) and the new cache."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, **dict(zip(self.past_names, past, strict=True))}
        if self.selects_logits:
            every = np.tile(np.arange(input_ids.shape[1], dtype=np.int64), (input_ids.shape[0], 1))
            feeds["logits_positions"] = every if positions is None else positions
        outputs = self.session.run(self.output_names, feeds)
        return outputs[0], outputs[1:]

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits at each prompt's last token ([batch, vocab]) and the prompts' cache."""
        ids, mask = right_padded(prompts, self.pad_token_id)
        lasts = [len(p) - 1 for p in prompts]
        logits, cache = self.run(ids, mask, self.empty_cache(len(prompts)), self._positions(lasts))
        return self._at(logits, lasts), cache
