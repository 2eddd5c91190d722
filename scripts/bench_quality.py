"""Quality of each engine of bench_decoder.py, from its own logits: the perplexity of one fixed held-out text, and
accuracy on the project's quality question set (`lynx.tools.quality`, the CpQU batch's questions, asked the way the
batch asks them: the chat template, greedy, 48 tokens, an accepted answer anywhere in the reply).

Both engines see the same token ids (lynx's tokenizer and chat template), so the numbers differ only by the weights
and the arithmetic each engine runs on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lynx.contracts.tokenizer import ChatMessage
from lynx.decoder import kv
from lynx.decoder.model import DecoderModel
from lynx.tokenization.text import ModelTokenizer
from lynx.tools.quality.cpqu import is_correct, load_questions

# Written for this benchmark (so in no model's training data): ~600 tokens of plain English prose.
HELDOUT_TEXT = Path(__file__).with_name("bench_data") / "heldout.txt"
ANSWER_TOKENS = 48  # what the CpQU batch asks the gateway for

# Logits of every position of one sequence ([positions, vocab]); a greedy continuation of prompt ids (new ids only).
AllLogits = Callable[[list[int]], np.ndarray]
Greedy = Callable[[list[int], int, int], list[int]]


@dataclass(frozen=True)
class Quality:
    perplexity: float
    correct: int
    questions: int
    scored_tokens: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    """exp of the mean negative log-likelihood of ids[1:] given the logits at the positions before each."""
    scores = logits[:-1].astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    log_norm = (top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True)))[:, 0]
    chosen = scores[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(np.mean(log_norm - chosen)))


def measure(tokenizer: ModelTokenizer, all_logits: AllLogits, greedy: Greedy, eos: int) -> Quality:
    text_ids = [1, *tokenizer.encode_text(HELDOUT_TEXT.read_text())]  # after <|im_start|>, as any document is read
    correct = 0
    questions = load_questions()
    for question in questions:
        prompt = tokenizer.encode_chat([ChatMessage(role="user", content=question.question)])
        correct += is_correct(tokenizer.decode(greedy(prompt, ANSWER_TOKENS, eos)), question.answers)
    return Quality(perplexity(all_logits(text_ids), text_ids), correct, len(questions), len(text_ids) - 1)


def lynx_all_logits(model: DecoderModel) -> AllLogits:
    def run(ids: list[int]) -> np.ndarray:
        logits, _ = model.run(np.array([ids], dtype=np.int64), np.ones((1, len(ids)), dtype=np.int64),
                              model.empty_cache(1))
        return logits[0]
    return run


def lynx_greedy(model: DecoderModel) -> Greedy:
    """The plain path of lynx's decoder (DecoderModel.prefill/run), greedy, stopping at end-of-sequence."""
    def run(prompt: list[int], tokens: int, eos: int) -> list[int]:
        logits, cache = model.prefill([prompt])
        out = [int(logits[0].argmax())]
        while len(out) < tokens and out[-1] != eos:
            mask = kv.decode_attention_mask([len(prompt) + len(out) - 1], cache[0].shape[kv.SEQ_AXIS])
            logits, cache = model.run(np.array([[out[-1]]], dtype=np.int64), mask, cache)
            out.append(int(logits[0, -1].argmax()))
        return out
    return run


class LlamaCppQuality:
    """llama-cpp-python on a GGUF file, every position's logits kept (for the perplexity)."""

    def __init__(self, gguf: Path, threads: int, context: int = 1024) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=context,
                         n_batch=context, logits_all=True, verbose=False)

    def all_logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[:len(ids)], dtype=np.float32)

    def greedy(self, prompt: list[int], tokens: int, eos: int) -> list[int]:
        out: list[int] = []
        for token in self.llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            out.append(int(token))
            if len(out) == tokens or token == eos:
                break
        return out
