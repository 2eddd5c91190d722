#!/usr/bin/env python3
"""How long RAG-sized prompts stall the streams already running: the decoder service with whole-prompt prefill
against chunked prefill, side by side.

Eight streams decode (32-token prompts, ``--tokens`` each, end-of-sequence ignored) while ~800-token prompts
arrive every ``--gap`` seconds. For each decoder setting, alternating within one run: the running streams'
inter-token latency (p50, p99, worst, from the arrival times of their NDJSON token events), the long prompts' time
to first token, and aggregate tokens/s.

Usage: .venv/bin/python scripts/bench_prefill_stall.py [--repeats 2] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench_common import (
    command_line, load_average, machine, median, model_name, start_decoder, stop_on_sigterm, write_section,
)
from bench_engines import streamed_lines
from lynx.tools.models.cache import build

HEADING = "## Long prompts arriving while streams decode: whole vs chunked prefill"
STREAMS = 8
STREAM_PROMPT_TOKENS = 32
RAG_PROMPT_TOKENS = 800
RAG_OUTPUT_TOKENS = 16
THREADS = 2
# The prefill token budget per engine step: 4096 takes any prompt whole (as before chunking), the others chunk it.
BUDGETS = {"whole prompt (budget 4096)": 4096, "chunks of 128 (default)": 128, "chunks of 64": 64}


@dataclass
class Stream:
    first_token_s: float | None = None
    token_times: list[float] = field(default_factory=list)  # one entry per token, its event's arrival


def prompts(count: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[1, *rng.integers(1000, 20000, length - 1).tolist()] for _ in range(count)]


async def generate(url: str, ids: list[int], tokens: int) -> Stream:
    stream, started = Stream(), time.perf_counter()
    async for line in streamed_lines(url, "/v1/generate", {"input_ids": ids, "max_tokens": tokens, "ignore_eos": True}):
        if ids_in_line := json.loads(line).get("ids"):
            now = time.perf_counter()
            stream.first_token_s = stream.first_token_s or now - started
            stream.token_times += [now] * len(ids_in_line)
    return stream


async def workload(url: str, tokens: int, rag_prompts: int, gap: float) -> dict:
    started = time.perf_counter()
    running = [asyncio.create_task(generate(url, p, tokens)) for p in prompts(STREAMS, STREAM_PROMPT_TOKENS, seed=5)]
    rag = []
    for prompt in prompts(rag_prompts, RAG_PROMPT_TOKENS, seed=9):
        await asyncio.sleep(gap)
        rag.append(asyncio.create_task(generate(url, prompt, RAG_OUTPUT_TOKENS)))
    streams, answers = await asyncio.gather(*running), await asyncio.gather(*rag)
    elapsed = time.perf_counter() - started
    gaps = sorted(b - a for s in streams for a, b in zip(s.token_times, s.token_times[1:], strict=False))
    generated = sum(len(s.token_times) for s in [*streams, *answers])
    return {"itl_p50": gaps[len(gaps) // 2], "itl_p99": gaps[int(0.99 * (len(gaps) - 1))], "itl_max": gaps[-1],
            "rag_ttft": median([a.first_token_s for a in answers]), "tokens_per_s": generated / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=160, help="tokens each running stream generates")
    parser.add_argument("--rag-prompts", type=int, default=5)
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between two long prompts")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()
    models = build()
    log_dir = Path(tempfile.mkdtemp(prefix="lynx-bench-stall-"))
    results: dict[str, list[dict]] = {name: [] for name in BUDGETS}
    for _ in range(args.repeats):
        for name, budget in BUDGETS.items():
            decoder = start_decoder(models, log_dir / f"decoder-{budget}.log", THREADS, kv_slots="16",
                                    queue_capacity="64", prefill_token_budget=str(budget))
            try:
                # Warm up with the workload itself: onnxruntime's first calls at each new shape (prefill widths,
                # batch sizes) take several times as long, and would otherwise count as stalls.
                asyncio.run(workload(decoder.url, args.tokens, args.rag_prompts, args.gap))
                results[name].append(asyncio.run(workload(decoder.url, args.tokens, args.rag_prompts, args.gap)))
            finally:
                decoder.stop()
    section = render(args, results)
    print(section)
    if args.output:
        write_section(args.output, HEADING, section)


def render(args, results: dict[str, list[dict]]) -> str:
    argv = ["--repeats", str(args.repeats), "--tokens", str(args.tokens), "--rag-prompts", str(args.rag_prompts),
            "--gap", str(args.gap), "--output", "docs/BENCHMARKS.md"]
    lines = [
        HEADING, "",
        f"`{command_line('bench_prefill_stall.py', argv)}` on {machine()}, {model_name()} int4, {THREADS} threads, "
        f"16 KV slots; load average {load_average():.1f} at the end. {STREAMS} streams ({STREAM_PROMPT_TOKENS}-token "
        f"prompts, {args.tokens} tokens each) decode while {args.rag_prompts} prompts of {RAG_PROMPT_TOKENS} tokens "
        f"arrive {args.gap:g} s apart ({RAG_OUTPUT_TOKENS} tokens each). Medians of {args.repeats} runs per setting, "
        "the settings alternating.", "",
        "| prefill | running streams' ITL p50 | ITL p99 | worst gap | long prompts' TTFT (median) | tokens/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        m = {key: median([r[key] for r in runs]) for key in runs[0]}
        lines.append(f"| {name} | {m['itl_p50'] * 1000:.0f} ms | {m['itl_p99'] * 1000:.0f} ms | "
                     f"{m['itl_max'] * 1000:.0f} ms | {m['rag_ttft'] * 1000:.0f} ms | {m['tokens_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
