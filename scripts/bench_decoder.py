#!/usr/bin/env python3
"""Decoder benchmark: lynx's decoder service against llama.cpp and onnxruntime-genai, greedy, side by side in one
run, every engine on the same quantization format and its quality measured.

The format: lynx's ONNX model is the packaged Q4_1 GGUF file re-quantized by onnxruntime-genai's builder (symmetric
int4, blocks of 32, on every weight group); llama.cpp runs the same format made by its own `llama-quantize` from the
packaged file (Q4_0 on every weight group, tied embedding and output included), into a cache folder (bench_formats).
The section prints what each engine runs on each weight group, read from the files.

Measures, alternating the engines within each repeat so machine noise hits all alike:
1. the anchors: aggregate tokens/s, time to first token and inter-token latency at 1, 4, 8 and 16 concurrent
   streams, each generating the same number of tokens from distinct 32-token prompts (token ids, so every engine
   sees the same input; new prompts each repeat, so no prefix cache can answer): llama.cpp's `llama-server` with 16
   parallel slots and llama-cpp-python in process (1 stream), onnxruntime-genai's generator and the two raw loops
   (KV cache copied each step, and in place) on lynx's ONNX model, and the decoder service;
2. quality from each engine's own logits: perplexity of a fixed held-out text and accuracy on the quality question
   set (bench_quality), lynx's model against llama.cpp's matching file and the packaged Q4_1 file;
3. time to first token at low load minus the raw prefill time (the pipeline's overhead);
4. continuous vs static batching under one seeded arrival pattern.

The anchors need the `bench` extra, which compiles llama.cpp for this CPU (README, "Benchmarks").
LYNX_BENCH_MODELS=<folder of `lynx models build`'s layout> runs lynx's side on another build of the model.
Usage: .venv/bin/python scripts/bench_decoder.py [--repeats 5] [--tokens 64] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import command_line, load_average, machine, model_name, start_decoder, stop_on_sigterm, write_section
from bench_formats import format_cell, llama_matching_file, onnx_groups
from bench_quality import LlamaCppQuality, Quality, lynx_all_logits, lynx_greedy, measure
from bench_engines import (
    GenaiGenerator, LlamaCppPython, LlamaServer, Streams, lynx_service, lynx_stream, raw_loop_copying, raw_loop_in_place,
)
from lynx.decoder.model import DecoderModel
from lynx.tokenization.text import ModelTokenizer
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
QUALITY_HEADING = "## Quality of each engine's format, from its own logits"
TTFT_HEADING = "## Time to first token at low load"
BATCHING_HEADING = "## Continuous vs static batching, same arrivals"
RAW_LOOPS = ("raw loop, copying", "raw loop, in place")
LYNX = "lynx decoder service"
SERVER = "llama-server"
ENGINES = (*RAW_LOOPS, "onnxruntime-genai", SERVER, "llama-cpp-python", LYNX)
# A model built elsewhere (a lever measured on a build of one's own; the shared cache's files stay as they are).
MODELS_ENV = "LYNX_BENCH_MODELS"


def prompt_ids(count: int, seed: int = 7) -> list[list[int]]:
    """Distinct 32-token prompts (so nothing could be shared between rows); another seed, other prompts."""
    rng = np.random.default_rng(seed)
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


def anchors(models: Path, gguf: Path, model: DecoderModel, service: ServiceProcess, log_dir: Path, repeats: int,
            tokens: int) -> dict[tuple[str, int], list[Streams]]:
    """Every engine at every stream count, ``repeats`` times, the engines alternating within each repeat. Each repeat
    sends new prompts (the same to every engine): llama-cpp-python keeps its last prompt's cache, and a repeated
    prompt would be a cache hit, not a prefill."""
    # onnxruntime-genai feeds only the inputs it knows: a model that takes logits_positions is lynx's alone.
    genai = None if model.selects_logits else GenaiGenerator(models / "decoder", THREADS)
    in_process = LlamaCppPython(gguf, THREADS, context=PROMPT_TOKENS + tokens + 8)
    server = LlamaServer(gguf, THREADS, slots=max(BATCHES), slot_context=PROMPT_TOKENS + tokens + 8,
                         log=log_dir / "llama-server.log")
    runs: dict[tuple[str, int], list[Streams]] = {}
    try:
        pool = model.kv_pool(max(BATCHES), PROMPT_TOKENS + tokens + 8)
        engines = {"raw loop, copying": lambda p: raw_loop_copying(model, p, tokens),
                   "raw loop, in place": lambda p: raw_loop_in_place(model, pool, p, tokens),
                   "onnxruntime-genai": lambda p: genai.run(p, tokens),
                   SERVER: lambda p: server.run(p, tokens),
                   "llama-cpp-python": lambda p: in_process.run(p[0], tokens),
                   LYNX: lambda p: lynx_service(service.url, p, tokens)}
        if genai is None:
            del engines["onnxruntime-genai"]
        for streams in BATCHES:  # warm every engine up at every width (first calls at a new shape allocate)
            for name, run in engines.items():
                if name != "llama-cpp-python" or streams == 1:
                    run(prompt_ids(streams, seed=1000 + streams))
        for repeat in range(repeats):
            for streams in BATCHES:
                prompts = prompt_ids(streams, seed=repeat * 100 + streams)
                for name, run in engines.items():
                    if name == "llama-cpp-python" and streams > 1:
                        continue
                    time.sleep(SETTLE_SECONDS)
                    runs.setdefault((name, streams), []).append(run(prompts))
    finally:
        server.stop()
    return runs


def quality(models: Path, model: DecoderModel, ggufs: dict[str, Path]) -> dict[str, Quality]:
    """Perplexity and accuracy of lynx's model (its own decoder code) and of llama.cpp on each GGUF file."""
    tokenizer = ModelTokenizer(models / "decoder")
    found = {"lynx (ONNX model)": measure(tokenizer, lynx_all_logits(model), lynx_greedy(model), model.eos_token_id)}
    for label, gguf in ggufs.items():
        llama = LlamaCppQuality(gguf, THREADS)
        found[label] = measure(tokenizer, llama.all_logits, llama.greedy, model.eos_token_id)
        del llama
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per stream")
    parser.add_argument("--arrivals", type=int, default=24, help="requests in the arrival pattern")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()

    models = Path(os.environ[MODELS_ENV]) if os.environ.get(MODELS_ENV) else build()
    model = DecoderModel(models / "decoder", THREADS)
    packaged = build_env_package_dir(DECODER_PACKAGE) / DECODER_GGUF
    gguf, llama_formats = llama_matching_file(packaged)
    formats = {"lynx (ONNX model)": onnx_groups(models / "decoder"), "llama.cpp (matching file)": llama_formats}
    prompts = prompt_ids(max(BATCHES + (args.arrivals,)))
    log_dir = Path(tempfile.mkdtemp(prefix="lynx-bench-"))
    scores = quality(models, model, {"llama.cpp (matching file)": gguf, "llama.cpp (packaged Q4_1 file)": packaged})
    service = start_decoder(models, log_dir / "decoder-continuous.log", THREADS, kv_slots="16", queue_capacity="64")
    try:
        runs = anchors(models, gguf, model, service, log_dir, args.repeats, args.tokens)
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
    sections = {ANCHORS_HEADING: render_anchors(produced, args.tokens, runs, formats),
                QUALITY_HEADING: render_quality(produced, scores),
                TTFT_HEADING: render_ttft(produced, prefill_raw, ttft_service),
                BATCHING_HEADING: render_batching(produced, args.arrivals, batching)}
    for heading, section in sections.items():
        print(section)
        if args.output:
            write_section(args.output, heading, section)


def render_anchors(produced: str, tokens: int, runs: dict[tuple[str, int], list[Streams]],
                   formats: dict[str, dict[str, dict[str, int]]]) -> str:
    med = statistics.median

    def rates(name: str, streams: int) -> list[float]:
        return [r.tokens_per_s for r in runs.get((name, streams), [])]

    def ttft(name: str, streams: int) -> float:
        return med(t for r in runs[(name, streams)] for t in r.first_tokens())

    def spread(values: list[float]) -> str:
        return f"{med(values):.0f} ({min(values):.0f}-{max(values):.0f})"

    repeats = len(runs[(LYNX, 1)])
    groups = ("embedding", "attention", "MLP", "output")
    lines = [
        ANCHORS_HEADING, "",
        f"{produced} Each stream: a distinct {PROMPT_TOKENS}-token prompt given as token ids (new prompts each repeat, "
        f"the same for every engine), {tokens} tokens generated greedily, end-of-sequence ignored; time from sending "
        "to each token's arrival, prefill included. llama-server: 16 parallel slots (continuous batching), streamed "
        "`/completion`, `cache_prompt` off; the decoder service: concurrent NDJSON streams, 16 KV slots. "
        f"{repeats} repeats, the engines alternating within each; medians, with the lowest and highest repeat in "
        "brackets. The machine's 2 cores are shared with other engineers' test runs: absolute numbers move from run to "
        "run, the ratios within one alternating run much less.", "",
        "What each engine runs, read from its files (the ONNX graph's quantized operators; llama-quantize's log of the "
        "file it made from the packaged `SmolLM2-135M-Instruct.Q4_1.gguf`):", "",
        "| engine | " + " | ".join(groups) + " |", "| --- " * (len(groups) + 1) + "|",
    ]
    for engine, by_group in formats.items():
        lines.append(f"| {engine} | " + " | ".join(format_cell(by_group.get(g, {})) for g in groups) + " |")
    lines += ["", "Both are symmetric 4-bit with one scale per block of 32 weights on every group (ggml's Q4_0 keeps "
              "the scale in fp16, onnxruntime in fp32); both quantize the activations to int8 for the products "
              "(ggml's Q4_0 x Q8_0 dot products, onnxruntime's accuracy_level 4). The raw loops, onnxruntime-genai and "
              "the decoder service run the ONNX model; llama-server and llama-cpp-python the matching GGUF file.", "",
              f"| streams | {LYNX} tok/s | {SERVER} tok/s | lynx / llama-server | lynx TTFT p50 | llama-server TTFT "
              "p50 |", "| --- | --- | --- | --- | --- | --- |"]
    for streams in BATCHES:
        ratios = [a / b for a, b in zip(rates(LYNX, streams), rates(SERVER, streams), strict=True)]
        lines.append(f"| {streams} | {spread(rates(LYNX, streams))} | {spread(rates(SERVER, streams))} | "
                     f"{med(ratios):.0%} ({min(ratios):.0%}-{max(ratios):.0%}) | {ttft(LYNX, streams) * 1000:.0f} ms | "
                     f"{ttft(SERVER, streams) * 1000:.0f} ms |")
    lines += ["", "Every engine, aggregate tokens/s (median, lowest-highest repeat):", "",
              "| streams | " + " | ".join(ENGINES) + " | lynx / best raw loop |", "| --- " * (len(ENGINES) + 2) + "|"]
    for streams in BATCHES:
        best_raw = max(med(rates(name, streams)) for name in RAW_LOOPS)
        lines.append(f"| {streams} | " + " | ".join(spread(rates(name, streams)) if rates(name, streams) else "-"
                                                    for name in ENGINES)
                     + f" | {med(rates(LYNX, streams)) / best_raw:.0%} |")
    lines += ["", "Latency (all repeats pooled): time to first token, and the gaps between a stream's tokens.", "",
              "| engine | streams | TTFT p50 | ITL p50 | ITL p99 |", "| --- | --- | --- | --- | --- |"]
    for name in ENGINES:
        for streams in BATCHES:
            found = runs.get((name, streams))
            if not found:
                continue
            gaps = [g for r in found for g in r.gaps()]
            lines.append(f"| {name} | {streams} | {ttft(name, streams) * 1000:.0f} ms | {med(gaps) * 1000:.1f} ms | "
                         f"{percentile(gaps, 99) * 1000:.1f} ms |")
    return "\n".join(lines) + "\n"


def render_quality(produced: str, scores: dict[str, Quality]) -> str:
    first = next(iter(scores.values()))
    lines = [
        QUALITY_HEADING, "",
        f"{produced} Perplexity: of `scripts/bench_data/heldout.txt` ({first.scored_tokens} tokens scored, one "
        "sequence, every position's logits from the engine itself: lynx's `DecoderModel.run`, llama-cpp-python with "
        f"`logits_all`). Accuracy: the quality question set (`lynx.tools.quality`, {first.questions} questions), each "
        "asked through the chat template, greedy, at most 48 tokens, right when an accepted answer appears in the "
        "reply. Same token ids for every engine (lynx's tokenizer).", "",
        "| engine and format | perplexity | accuracy |", "| --- | --- | --- |",
    ]
    for label, score in scores.items():
        lines.append(f"| {label} | {score.perplexity:.2f} | {score.correct}/{score.questions} ({score.accuracy:.0%}) |")
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
