#!/usr/bin/env python3
"""Decoder benchmark: the decoder service against a plain onnxruntime batched loop, side by side.

Measures, alternating the two in one run so machine noise hits both alike:
1. aggregate tokens/s at 1, 4, 8, 16 concurrent streams (service) vs batch 1, 4, 8, 16 (raw loop),
   each generating the same number of tokens from the same 32-token prompts, prefill included;
2. continuous vs static batching under one seeded arrival pattern;
3. time to first token at low load minus the raw prefill time (the pipeline's overhead).

Usage: .venv/bin/python scripts/bench_decoder.py [--repeats 3] [--tokens 64] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from lynx.decoder import kv
from lynx.decoder.model import DecoderModel
from lynx.models.cache import build
from lynx.processes import ServiceProcess, start_service, wait_ready

PROMPT_TOKENS = 32
BATCHES = (1, 4, 8, 16)
THREADS = 2
# Idle onnxruntime threads spin briefly after a call; let the other process's threads go quiet
# before timing a single short call, or each side measures the other's spinning.
SETTLE_SECONDS = 0.3
ARRIVAL_MEAN_SECONDS = 0.4  # about 2.5 requests/s x 72 tokens: below the decoder's capacity


def prompt_ids(model: DecoderModel, count: int) -> list[list[int]]:
    """Distinct 32-token prompts (so nothing could be shared between rows)."""
    rng = np.random.default_rng(7)
    return [[1, *rng.integers(1000, 20000, PROMPT_TOKENS - 1).tolist()] for _ in range(count)]


def raw_loop(model: DecoderModel, prompts: list[list[int]], tokens: int) -> tuple[float, float]:
    """Batched prefill then `tokens - 1` greedy decode steps; (total seconds, prefill seconds)."""
    started = time.perf_counter()
    logits, cache = model.prefill(prompts)
    prefilled = time.perf_counter()
    next_ids = logits.argmax(axis=-1)
    lengths = [len(p) for p in prompts]
    for _ in range(tokens - 1):
        mask = kv.decode_attention_mask(lengths, cache[0].shape[kv.SEQ_AXIS])
        logits, cache = model.run(next_ids.reshape(-1, 1).astype(np.int64), mask, cache)
        next_ids = logits[:, -1].argmax(axis=-1)
        lengths = [n + 1 for n in lengths]
    return time.perf_counter() - started, prefilled - started


async def generate(client: httpx.AsyncClient, ids: list[int], tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, seconds to last, tokens received) for one streamed request."""
    started = time.perf_counter()
    first, received = None, 0
    async with client.stream("POST", "/v1/generate", json={"input_ids": ids, "max_tokens": tokens,
                                                          "ignore_eos": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            event = json.loads(line)
            if "ids" in event and event["ids"]:
                first = first or time.perf_counter() - started
                received += len(event["ids"])
    return first, time.perf_counter() - started, received


async def service_throughput(url: str, prompts: list[list[int]], tokens: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(generate(client, p, tokens) for p in prompts))
        elapsed = time.perf_counter() - started
    return sum(r[2] for r in results) / elapsed


async def arrival_pattern(url: str, prompts: list[list[int]], plan: list[tuple[float, int]]) -> dict:
    """Send requests at the planned offsets; latency and TTFT per request, and the makespan."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()

        async def one(offset: float, tokens: int, ids: list[int]):
            await asyncio.sleep(max(0.0, offset - (time.perf_counter() - started)))
            return await generate(client, ids, tokens)

        results = await asyncio.gather(*(one(o, n, p) for (o, n), p in zip(plan, prompts[:len(plan)], strict=True)))
        makespan = time.perf_counter() - started
    latencies = sorted(r[1] for r in results)
    ttfts = sorted(r[0] for r in results)
    return {"makespan_s": makespan, "latency_p50_s": statistics.median(latencies),
            "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))], "ttft_p50_s": statistics.median(ttfts),
            "tokens_per_s": sum(r[2] for r in results) / makespan}


def start_decoder(models: Path, log_dir: Path, **settings: str) -> ServiceProcess:
    env = {**os.environ, "LYNX_DECODER_MODEL_DIR": str(models / "decoder"), "LYNX_DECODER_THREADS": str(THREADS),
           "LYNX_DECODER_LOG_LEVEL": "WARNING", "OTEL_TRACES_EXPORTER": "none",
           **{f"LYNX_DECODER_{k.upper()}": v for k, v in settings.items()}}
    service = start_service("decoder", env, log_dir / f"decoder-{settings.get('batching', 'continuous')}.log")
    wait_ready([service], 120)
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per stream")
    parser.add_argument("--arrivals", type=int, default=24, help="requests in the arrival pattern")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    models = build()
    model = DecoderModel(models / "decoder", THREADS)
    prompts = prompt_ids(model, max(BATCHES + (args.arrivals,)))
    log_dir = Path(tempfile.mkdtemp(prefix="lynx-bench-"))
    service = start_decoder(models, log_dir, kv_slots="16", queue_capacity="64", prefill_token_budget="512")
    try:
        raw_loop(model, prompts[:1], 4)  # warm both up
        asyncio.run(service_throughput(service.url, prompts[:1], 4))
        throughput = {n: {"raw": [], "service": []} for n in BATCHES}
        for _ in range(args.repeats):
            for n in BATCHES:
                total, _ = raw_loop(model, prompts[:n], args.tokens)
                throughput[n]["raw"].append(n * args.tokens / total)
                throughput[n]["service"].append(asyncio.run(service_throughput(service.url, prompts[:n], args.tokens)))
        prefill_raw, ttft_service = [], []
        for _ in range(max(args.repeats, 5) * 2):
            time.sleep(SETTLE_SECONDS)
            prefill_raw.append(raw_loop(model, prompts[:1], 1)[1])
            time.sleep(SETTLE_SECONDS)
            ttft_service.append(asyncio.run(_first_token(service.url, prompts[0])))
    finally:
        service.stop()

    rng = np.random.default_rng(11)
    offsets = np.cumsum(rng.exponential(ARRIVAL_MEAN_SECONDS, args.arrivals)).tolist()
    plan = [(o, int(n)) for o, n in zip(offsets, rng.integers(16, 129, args.arrivals), strict=True)]
    batching = {}
    for mode in ("continuous", "static"):
        decoder = start_decoder(models, log_dir, batching=mode, kv_slots="8", queue_capacity="64")
        try:
            asyncio.run(service_throughput(decoder.url, prompts[:1], 4))
            batching[mode] = asyncio.run(arrival_pattern(decoder.url, prompts, plan))
        finally:
            decoder.stop()

    report = render(args, throughput, prefill_raw, ttft_service, batching)
    print(report)
    if args.output:
        args.output.write_text(report)


async def _first_token(url: str, ids: list[int]) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return (await generate(client, ids, 1))[0]


def render(args, throughput, prefill_raw, ttft_service, batching) -> str:
    med = statistics.median
    lines = [
        "# Benchmarks", "",
        "Produced by `.venv/bin/python scripts/bench_decoder.py "
        f"--repeats {args.repeats} --tokens {args.tokens} --arrivals {args.arrivals} --output docs/BENCHMARKS.md` "
        f"on {platform.machine()}, {os.cpu_count()} cores, onnxruntime with {THREADS} intra-op threads, "
        "SmolLM2-135M-Instruct int4. Medians of the repeats; raw loop and service alternate within one run.", "",
        "## Aggregate decode throughput (tokens/s, prefill included)", "",
        f"Each stream: a distinct {PROMPT_TOKENS}-token prompt, {args.tokens} generated tokens (end-of-sequence ignored). "
        "Raw loop: one batched prefill, then greedy steps on `DecoderModel` with the KV cache fed back, no HTTP. "
        "Service: that many concurrent NDJSON streams to the decoder service (16 KV slots).", "",
        "| streams / batch | raw loop | decoder service | service / raw |", "| --- | --- | --- | --- |",
    ]
    for n, runs in throughput.items():
        raw, service = med(runs["raw"]), med(runs["service"])
        lines.append(f"| {n} | {raw:.0f} | {service:.0f} | {service / raw:.0%} |")
    overhead = [t - p for t, p in zip(ttft_service, prefill_raw, strict=True)]
    lines += [
        "", "## Time to first token at low load", "",
        f"One request at a time, {PROMPT_TOKENS}-token prompt; {len(overhead)} alternating pairs.", "",
        "| raw prefill (median) | service TTFT (median) | overhead (median of pairs) |", "| --- | --- | --- |",
        f"| {med(prefill_raw) * 1000:.1f} ms | {med(ttft_service) * 1000:.1f} ms | {med(overhead) * 1000:.1f} ms |",
        "", "## Continuous vs static batching, same arrivals", "",
        f"{args.arrivals} requests, exponential inter-arrival times (mean {ARRIVAL_MEAN_SECONDS * 1000:.0f} ms, "
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
