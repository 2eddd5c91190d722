#!/usr/bin/env python3
"""What serving over HTTP takes from the model: the decoder service against the raw in-place loop at 8 streams,
once with the model's threads on every core and once with a core left free, side by side in one run.

For each thread count, pairs alternate (raw loop, then service) so machine noise hits both alike. During each
service run, per-thread scheduler statistics (/proc/<pid>/task/<tid>/schedstat: nanoseconds on a CPU and waiting
for one) say what the decoder's event loop (its main thread) and this benchmark's client (its main thread) ran,
and how long the model's threads (every other thread of the decoder) were runnable but waiting for a core.

Usage: .venv/bin/python scripts/bench_serving_share.py [--pairs 10] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import (
    command_line, load_average, machine, median, model_name, start_decoder, stop_on_sigterm, write_section,
)
from bench_decoder import PROMPT_TOKENS, SETTLE_SECONDS, prompt_ids
from bench_engines import lynx_service, raw_loop_in_place
from lynx.decoder.model import DecoderModel
from lynx.tools.models.cache import build

HEADING = "## Serving's share of the cores: the service against the raw loop, with and without a free core"
STREAMS = 8


@dataclass(frozen=True)
class ThreadTime:
    running_ns: int
    waiting_ns: int  # runnable, but no core free


def thread_times(pid: int) -> dict[int, ThreadTime]:
    """Every thread of ``pid`` by thread id; a thread that ends while being read is left out."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            running, waiting, _ = (int(x) for x in Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split())
        except FileNotFoundError:
            continue
        times[int(tid)] = ThreadTime(running, waiting)
    return times


@dataclass(frozen=True)
class ServiceRun:
    tokens_per_s: float
    event_loop_share: float  # of one core, over the run's wall time
    client_share: float
    model_waiting_share: float  # the model threads' time waiting for a core, summed, over the wall time


def measured_service_run(url: str, service_pid: int, prompts: list[list[int]], tokens: int) -> ServiceRun:
    client_pid = os.getpid()
    service_before, client_before = thread_times(service_pid), thread_times(client_pid)
    started = time.perf_counter()
    streams = lynx_service(url, prompts, tokens)
    wall_ns = (time.perf_counter() - started) * 1e9
    service_after, client_after = thread_times(service_pid), thread_times(client_pid)

    def spent(tid: int, before: dict[int, ThreadTime], after: dict[int, ThreadTime]) -> ThreadTime:
        start = before.get(tid, ThreadTime(0, 0))
        return ThreadTime(after[tid].running_ns - start.running_ns, after[tid].waiting_ns - start.waiting_ns)

    model_waiting = sum(spent(tid, service_before, service_after).waiting_ns
                        for tid in service_after if tid != service_pid)
    return ServiceRun(streams.tokens_per_s,
                      spent(service_pid, service_before, service_after).running_ns / wall_ns,
                      spent(client_pid, client_before, client_after).running_ns / wall_ns,
                      model_waiting / wall_ns)


@dataclass
class Pairs:
    raw: list[float]
    service: list[ServiceRun]

    def ratios(self) -> list[float]:
        return [s.tokens_per_s / r for r, s in zip(self.raw, self.service, strict=True)]


def measure(models: Path, threads: int, pairs: int, tokens: int, log_dir: Path) -> Pairs:
    model = DecoderModel(models / "decoder", threads)
    pool = model.kv_pool(STREAMS, PROMPT_TOKENS + tokens + 8)
    service = start_decoder(models, log_dir / "decoder-continuous.log", threads)
    prompts = prompt_ids(STREAMS)
    result = Pairs([], [])
    try:
        for _ in range(2):  # first calls at new shapes allocate
            raw_loop_in_place(model, pool, prompts, tokens)
            lynx_service(service.url, prompts, tokens)
        for _ in range(pairs):
            time.sleep(SETTLE_SECONDS)
            result.raw.append(raw_loop_in_place(model, pool, prompts, tokens).tokens_per_s)
            time.sleep(SETTLE_SECONDS)
            result.service.append(measured_service_run(service.url, service.process.pid, prompts, tokens))
    finally:
        service.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()
    models = build("int4")
    cores = os.cpu_count() or 1
    results: dict[int, Pairs] = {}
    for threads in sorted({cores, max(cores - 1, 1)}):
        with tempfile.TemporaryDirectory(prefix=f"lynx-bench-share-{threads}-") as log_dir:
            results[threads] = measure(models, threads, args.pairs, args.tokens, Path(log_dir))
    section = render(args, cores, results)
    print(section)
    if args.output:
        write_section(args.output, HEADING, section)


def render(args, cores: int, results: dict[int, Pairs]) -> str:
    argv = ["--pairs", str(args.pairs), "--tokens", str(args.tokens), "--output", "docs/BENCHMARKS.md"]
    lines = [
        HEADING, "",
        f"`{command_line('bench_serving_share.py', argv)}` on {machine()}, {model_name()} int4; load average "
        f"{load_average():.1f} at the end. {STREAMS} streams, {PROMPT_TOKENS}-token prompts, {args.tokens} tokens each "
        f"(end-of-sequence ignored). For each thread count, {args.pairs} pairs alternate: the raw in-place loop in "
        "process, then the decoder service over HTTP with the same thread count. Shares are of one core over the "
        "service run's wall time (the model threads' waits summed), medians of the runs.", "",
        "| model threads | raw loop tokens/s | service tokens/s | service / raw (median of pairs) | range of pairs | "
        "service's event loop | benchmark's client | model threads waiting for a core |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for threads, pairs in results.items():
        ratios = sorted(pairs.ratios())
        free = "every core" if threads >= cores else f"{cores - threads} core free"
        service = pairs.service
        lines.append(
            f"| {threads} ({free}) | {median(pairs.raw):.0f} | {median([s.tokens_per_s for s in service]):.0f} | "
            f"{median(ratios):.1%} | {ratios[0]:.1%}-{ratios[-1]:.1%} | "
            f"{median([s.event_loop_share for s in service]):.1%} | {median([s.client_share for s in service]):.1%} | "
            f"{median([s.model_waiting_share for s in service]):.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
