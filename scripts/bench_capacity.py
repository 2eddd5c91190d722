#!/usr/bin/env python3
"""Capacity: requests/s and tokens/s at saturation through the gateway against the raw onnxruntime decode limit, and
the gateway's fast paths (GET /v1/models, a request refused for its unknown API key) in requests/s and p99 latency.

One deployment in `lynx up`'s configuration on free ports (four services, spans to an OpenTelemetry Collector
forwarding to Jaeger, a Prometheus scraping every 5 s). Alternating, --repeats times: the in-place raw loop of
scripts/bench_engines.py in this process (a batch of as many sequences as the decoder has KV slots, each with a
prompt as long as the gateway's, generating the same tokens), then --concurrency clients sending `lynx load`'s chat
completions back to back through the gateway for --seconds. Then the fast paths, alternating, each --fast-seconds
at a time from --fast-connections kept-alive connections of a small asyncio HTTP/1.1 client, against the
deployment's gateway and, to tell tracing's share, a second gateway with OTEL_SDK_DISABLED=true beside it.

Usage: .venv/bin/python scripts/bench_capacity.py [--repeats 3] [--seconds 90] [--concurrency 8]
       [--fast-seconds 10] [--fast-connections 8] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench_common import (
    LEAVES, MAX_TOKENS, START_TIMEOUT_SECONDS, TRACING_OFF, Deployment, Processes, Saturation, bench_environment,
    command_line, cpu_seconds, load_average, load_spec, machine, median, model_name, running, saturate,
    start_gateway, start_observed, stop_on_sigterm, warm_up, write_section,
)
from bench_decoder import SETTLE_SECONDS, THREADS
from bench_engines import raw_loop_in_place
from lynx.decoder.kv import KVPool
from lynx.decoder.model import DecoderModel
from lynx.decoder.settings import DecoderSettings
from lynx.tools.load.driver import DEFAULT_PROMPT
from lynx.tools.load.report import percentile
from lynx.tools.models.cache import build
from lynx.local.processes import wait_ready

SECTION_HEADING = "## Capacity: saturation and the gateway's fast paths"
FAST_RPS_TARGET = 1000
FAST_P99_TARGET_MS = 20
UNKNOWN_KEY = "sk-bench-unknown-key"
CLIENT = "client"
TRACED, UNTRACED = "spans exported", "tracing off"
SDK_BATCHES = "spans exported in the SDK's batches of 512"


# --- saturation against the raw decode limit -----------------------------------------------------------------------

def prompt_tokens(deployment: Deployment) -> int:
    """How many tokens the gateway's prompt for `lynx load`'s question has (the chat template, retrieved passages)."""
    response = httpx.post(f"{deployment.gateway_url}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {deployment.key}"},
                          json={"model": model_name(), "temperature": 0, "max_tokens": 1,
                                "messages": [{"role": "user", "content": DEFAULT_PROMPT}]})
    response.raise_for_status()
    return response.json()["usage"]["prompt_tokens"]


def random_prompts(length: int, count: int) -> list[list[int]]:
    """Distinct prompts of ``length`` tokens, so that nothing could be shared between the batch's rows."""
    rng = np.random.default_rng(7)
    return [[1, *rng.integers(1000, 20000, length - 1).tolist()] for _ in range(count)]


@dataclass(frozen=True)
class RawRun:
    requests_per_s: float
    tokens_per_s: float


def raw_limit(model: DecoderModel, pool: KVPool, prompts: list[list[int]]) -> RawRun:
    time.sleep(SETTLE_SECONDS)
    streams = raw_loop_in_place(model, pool, prompts, MAX_TOKENS)
    total = streams.token_times[0][-1] - streams.started
    return RawRun(len(prompts) / total, len(prompts) * MAX_TOKENS / total)


# --- the fast paths ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FastPath:
    name: str
    request: bytes  # one whole HTTP/1.1 request, sent as it is on a kept-alive connection
    status: int  # what the gateway must answer


def fast_paths(url: str, key: str) -> list[FastPath]:
    host = urlsplit(url).netloc
    body = json.dumps({"model": model_name(), "max_tokens": MAX_TOKENS,
                       "messages": [{"role": "user", "content": DEFAULT_PROMPT}]}).encode()
    return [
        FastPath("GET /v1/models", f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
                 .encode(), 200),
        FastPath("POST /v1/chat/completions, unknown API key (401)",
                 f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {UNKNOWN_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body, 401),
    ]


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"no Content-Length in {head!r}")


async def hammer(url: str, path: FastPath, connections: int, seconds: float) -> tuple[list[float], float]:
    """``connections`` kept-alive connections, each sending ``path`` again as soon as its answer is read, for
    ``seconds``; (every request's latency, the wall time)."""
    address = urlsplit(url)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        try:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                writer.write(path.request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(content_length(head))
                latencies.append(time.perf_counter() - began)
                if int(head[9:12]) != path.status:
                    raise RuntimeError(f"{path.name} answered {head[:12]!r}, not {path.status}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, time.perf_counter() - started


@dataclass(frozen=True)
class FastRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_per_request_us: dict[str, float]


def fast_run(url: str, pids: dict[str, int], path: FastPath, connections: int, seconds: float) -> FastRun:
    pids = {**pids, CLIENT: os.getpid()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    latencies, elapsed = asyncio.run(hammer(url, path, connections, seconds))
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1e6 / len(latencies) for name, pid in pids.items()}
    return FastRun(len(latencies) / elapsed, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, cpu)


# --- the run -------------------------------------------------------------------------------------------------------

def measure(args: argparse.Namespace, work: Path) -> dict:
    env = bench_environment(work)
    slots = DecoderSettings(model_dir=Path(env["LYNX_DECODER_MODEL_DIR"])).kv_slots
    model = DecoderModel(build("int4") / "decoder", THREADS)
    pool = model.kv_pool(slots, DecoderSettings().max_context)
    with running() as processes:
        deployment = start_observed(processes, env, work)
        warm_up(deployment.gateway_url, deployment.key)
        prompts = random_prompts(prompt_tokens(deployment), slots)
        raw_loop_in_place(model, pool, prompts[:1], 2)
        load_start = load_average()
        raw: list[RawRun] = []
        gateway: list[Saturation] = []
        spec = load_spec(deployment.gateway_url, deployment.key, args.concurrency, seconds=args.seconds)
        steps: list[Callable[[], None]] = [lambda: raw.append(raw_limit(model, pool, prompts)),
                                           lambda: gateway.append(saturate(spec, deployment.pids()))]
        for repeat in range(args.repeats):
            for step in steps if repeat % 2 == 0 else reversed(steps):
                step()
        fast = measure_fast_paths(args, processes, env, deployment, work)
    return {"slots": slots, "prompt_tokens": len(prompts[0]), "raw": raw, "gateway": gateway, "fast": fast,
            "load": (load_start, load_average())}


def measure_fast_paths(args: argparse.Namespace, processes: Processes, env: dict[str, str], deployment: Deployment,
                       work: Path) -> dict[tuple[str, str], list[FastRun]]:
    """{(path, gateway): runs}: the deployment's gateway, and beside it (the same services behind them) one exporting
    its spans in the OpenTelemetry SDK's batches of 512 instead of lynx's 64, and one with OTEL_SDK_DISABLED=true,
    which tells what of the fast paths' time is tracing's."""
    leaves = {name: deployment.services[name] for name in LEAVES}
    sdk_batches = start_gateway(processes, {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": deployment.otlp_endpoint,
                                            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"},
                                leaves, work / "gateway-sdk-batches.log")
    untraced = start_gateway(processes, {**env, **TRACING_OFF}, leaves, work / "gateway-untraced.log")
    wait_ready([sdk_batches, untraced], START_TIMEOUT_SECONDS)
    gateways = {TRACED: (deployment.gateway_url, deployment.pids()),
                SDK_BATCHES: (sdk_batches.url, {**deployment.pids(), "gateway": sdk_batches.process.pid}),
                UNTRACED: (untraced.url, {**deployment.pids(), "gateway": untraced.process.pid})}
    fast: dict[tuple[str, str], list[FastRun]] = {}
    for _ in range(args.repeats):
        for name, (url, pids) in gateways.items():
            for path in fast_paths(url, deployment.key):
                run = fast_run(url, pids, path, args.fast_connections, args.fast_seconds)
                fast.setdefault((path.name, name), []).append(run)
    return fast


def render(args: argparse.Namespace, result: dict) -> str:
    raw, gateway = result["raw"], result["gateway"]
    raw_rps, raw_tps = median([r.requests_per_s for r in raw]), median([r.tokens_per_s for r in raw])
    rps, tps = median([g.requests_per_s for g in gateway]), median([g.tokens_per_s for g in gateway])
    errors = sum(g.report.requests - g.report.ok for g in gateway)
    lines = [
        SECTION_HEADING, "",
        f"Produced by `{args.command}` on {machine()} (load average {result['load'][0]:.1f} at the start, "
        f"{result['load'][1]:.1f} at the end), onnxruntime with {THREADS} intra-op threads. One deployment in "
        "`lynx up`'s configuration on free ports: the four services with their default settings (the decoder has "
        f"{result['slots']} KV slots), every span exported to an OpenTelemetry Collector forwarding to Jaeger, a "
        "Prometheus scraping every 5 s. Medians of the repeats; percentiles interpolated.", "",
        "### Saturation against the raw decode limit", "",
        f"Gateway: {args.concurrency} clients send `lynx load`'s chat completions back to back for {args.seconds:g} s "
        f"(`max_tokens` {MAX_TOKENS}, half streamed, retrieval on: {result['prompt_tokens']}-token prompts); "
        "throughput counts the answers that ended between the run's first answer and the end of its sending (every "
        f"client busy). Raw loop: `raw_loop_in_place` of scripts/bench_engines.py in the benchmark's process, a batch of "
        f"{result['slots']} distinct {result['prompt_tokens']}-token prompts prefilled at once, then "
        f"{MAX_TOKENS - 1} greedy steps: no HTTP, no queue, no retrieval or tokenizer. {args.repeats} repeats, the two "
        "alternating.", "",
        "| | requests/s | output tokens/s | each repeat: requests/s |", "| --- | --- | --- | --- |",
        f"| raw onnxruntime loop (batch {result['slots']}) | {raw_rps:.2f} | {raw_tps:.1f} "
        f"| {', '.join(f'{r.requests_per_s:.2f}' for r in raw)} |",
        f"| through the gateway | {rps:.2f} | {tps:.1f} | {', '.join(f'{g.requests_per_s:.2f}' for g in gateway)} |",
        f"| gateway / raw | {rps / raw_rps:.0%} | {tps / raw_tps:.0%} | |", "",
        f"Requests through the gateway: {sum(g.report.requests for g in gateway)}, {errors} failed. Latency at "
        f"saturation: p50 {median([g.report.latency_s.p50 for g in gateway]):.1f} s, p95 "
        f"{median([g.report.latency_s.p95 for g in gateway]):.1f} s.", "",
        "CPU time per answered request at saturation, by process (median of the repeats):", "",
        "| process | CPU per request |", "| --- | --- |",
        *(f"| {name} | {median([g.cpu_per_request_ms()[name] for g in gateway]):.1f} ms |" for name in gateway[0].cpu),
        "", *render_fast_paths(args, result["fast"]),
    ]
    return "\n".join(lines) + "\n"


def render_fast_paths(args: argparse.Namespace, fast: dict[tuple[str, str], list[FastRun]]) -> list[str]:
    def cpu(runs: list[FastRun], *names: str) -> str:
        return f"{median([sum(r.cpu_per_request_us[n] for n in names) for r in runs]):.0f} µs"

    lines = [
        "### Fast paths", "",
        f"A small asyncio HTTP/1.1 client in the benchmark's process (pre-encoded requests, {args.fast_connections} "
        f"kept-alive connections, each sending its next request as soon as the answer is read) for {args.fast_seconds:g}"
        f" s per run; {args.repeats} runs of each row, alternating. The refused request is a well-formed chat "
        "completion with an API key no tenant has: the gateway answers 401 without calling any service behind it. "
        f"Targets, for the deployment's gateway: >= {FAST_RPS_TARGET} requests/s and p99 < {FAST_P99_TARGET_MS} ms. "
        "Two more gateways run beside it in the same run, in front of the same services: one exporting its spans in "
        "the OpenTelemetry SDK's default batches (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512`; lynx's are 64), one with "
        "`OTEL_SDK_DISABLED=true`. CPU per request: user + system time of each process over the run, divided by the "
        "requests answered.", "",
        "| path | gateway | requests/s | p50 | p99 | each run: requests/s | CPU per request: gateway, client, "
        "collector + Jaeger | targets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (path, gateway), runs in fast.items():
        fast_rps, p99 = median([r.requests_per_s for r in runs]), median([r.p99_ms for r in runs])
        met = "met" if fast_rps >= FAST_RPS_TARGET and p99 < FAST_P99_TARGET_MS else "missed"
        lines.append(f"| {path} | {gateway} | {fast_rps:.0f} | {median([r.p50_ms for r in runs]):.1f} ms "
                     f"| {p99:.1f} ms | {', '.join(f'{r.requests_per_s:.0f}' for r in runs)} "
                     f"| {cpu(runs, 'gateway')}, {cpu(runs, CLIENT)}, {cpu(runs, 'otelcol', 'jaeger')} "
                     f"| {met if gateway == TRACED else '-'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=90.0, help="how long each saturation run sends")
    parser.add_argument("--concurrency", type=int, default=8, help="saturation clients (the decoder has 8 KV slots)")
    parser.add_argument("--fast-seconds", type=float, default=10.0, help="how long each fast-path run sends")
    parser.add_argument("--fast-connections", type=int, default=8, help="the fast-path client's connections")
    parser.add_argument("--output", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    if not (1 <= args.repeats <= 20 and 0 < args.seconds <= 600 and 1 <= args.concurrency <= 64
            and 0 < args.fast_seconds <= 120 and 1 <= args.fast_connections <= 256):
        parser.error("keep it bounded: 1-20 repeats, runs of at most 600 s (fast paths 120 s), 1-64 clients, "
                     "1-256 connections")
    args.command = command_line("bench_capacity.py", sys.argv[1:])
    stop_on_sigterm()
    section = render(args, measure(args, Path(tempfile.mkdtemp(prefix="lynx-bench-capacity-"))))
    print(section, flush=True)
    if args.output:
        write_section(args.output, SECTION_HEADING, section)


if __name__ == "__main__":
    main()
