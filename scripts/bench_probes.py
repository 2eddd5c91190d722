#!/usr/bin/env python3
"""Probe benchmark: /healthz latency of the retriever while concurrent /v1/retrieve clients saturate it.

A real `lynx serve retriever` process on loopback. A prober thread GETs /healthz on a fresh
connection (as a kubelet does) every --probe-interval seconds: first for --idle-seconds with the
retriever idle, then for --seconds while --clients clients send /v1/retrieve back to back, each
query a distinct --query-words-word text. Bounded: one probe in flight at a time, each with a
timeout, and the load stops at its deadline (requests in flight then finish).

Usage: .venv/bin/python scripts/bench_probes.py [--clients 8] [--seconds 20] [--workers 2]
       [--save-json FILE] [--baseline FILE] [--output docs/BENCHMARKS.md]

--baseline adds an earlier run saved with --save-json (for instance of the code before a change)
as a row of the table; --output replaces this benchmark's section of that file, or appends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench_common import write_section
from lynx.tools.load.report import percentile
from lynx.tools.models.cache import is_built, models_dir
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.topology import models_environment
from lynx.retriever.settings import RetrieverSettings

SECTION_HEADING = "## Retriever probes under load"
PROBE_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 120.0
QUERY_VOCABULARY = ("how do I define a function with default arguments keyword list comprehension dictionary tuple "
         "set class inheritance method module import package exception raise try except finally loop "
         "while for range iterator generator yield lambda string format slice index sort key virtual "
         "environment pip file read write context manager decorator scope global variable")


def summary(seconds: list[float]) -> dict[str, float]:
    return {"count": len(seconds), "p50_ms": percentile(seconds, 50) * 1000,
            "p99_ms": percentile(seconds, 99) * 1000, "max_ms": max(seconds) * 1000}


class Prober:
    """GET /healthz on a new connection every ``interval`` seconds, in its own thread (off the load's event loop)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_SECONDS + 1)

    def _run(self) -> None:
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=PROBE_TIMEOUT_SECONDS, limits=no_keepalive) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                self.latencies.append(elapsed)
                self.failures += not ok
                self._stop.wait(max(0.0, self.interval - elapsed))


async def saturate(url: str, clients: int, seconds: float, query_words: int, top_k: int) -> list[float]:
    """``clients`` concurrent clients sending /v1/retrieve back to back until the deadline; their latencies."""
    rng = random.Random(7)
    words = QUERY_VOCABULARY.split()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            query = " ".join(rng.choices(words, k=query_words))
            started = time.perf_counter()
            response = await client.post("/v1/retrieve", json={"query": query, "top_k": top_k})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return latencies


def start_retriever(log_dir: Path, workers: int | None) -> ServiceProcess:
    models = models_dir()
    if not is_built(models):
        sys.exit(f"models are not built in {models}: run `.venv/bin/lynx models build`")
    env = {**os.environ, **models_environment(models), "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
           "LYNX_RETRIEVER_LOG_LEVEL": "WARNING", "OTEL_TRACES_EXPORTER": "none"}
    if workers is not None:
        env["LYNX_RETRIEVER_WORKERS"] = str(workers)
    service = start_service("retriever", env, log_dir / "retriever.log")
    try:
        wait_ready([service], START_TIMEOUT_SECONDS)
    except Exception:
        service.stop()
        raise
    return service


def measure(args: argparse.Namespace) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="lynx-bench-probes-"))
    service = start_retriever(log_dir, args.workers)
    try:
        asyncio.run(saturate(service.url, 1, 1.0, args.query_words, args.top_k))  # warm up
        with Prober(service.url, args.probe_interval) as idle:
            time.sleep(args.idle_seconds)
        with Prober(service.url, args.probe_interval) as loaded:
            started = time.perf_counter()
            retrieves = asyncio.run(saturate(service.url, args.clients, args.seconds, args.query_words, args.top_k))
            load_seconds = time.perf_counter() - started
    finally:
        service.stop()
    return {"label": args.label, "workers": args.workers, "clients": args.clients, "seconds": args.seconds,
            "query_words": args.query_words, "top_k": args.top_k, "probe_interval": args.probe_interval,
            "idle": summary(idle.latencies), "loaded": {**summary(loaded.latencies), "failures": loaded.failures},
            "retrieve": {**summary(retrieves), "per_second": len(retrieves) / load_seconds}}


def table_row(run: dict) -> str:
    idle, loaded, retrieve = run["idle"], run["loaded"], run["retrieve"]
    workers = run["workers"] if run["workers"] is not None else "-"
    return (f"| {run['label']} | {workers} | {idle['p50_ms']:.1f} / {idle['p99_ms']:.1f} ms "
            f"| {loaded['p50_ms']:.1f} ms | {loaded['p99_ms']:.1f} ms | {loaded['max_ms']:.1f} ms "
            f"| {loaded['count']} ({loaded['failures']} failed) | {retrieve['per_second']:.1f} "
            f"| {retrieve['p50_ms']:.0f} / {retrieve['p99_ms']:.0f} ms |")


def render(runs: list[dict]) -> str:
    last = runs[-1]
    lines = [
        SECTION_HEADING, "",
        f"Produced by `{last['command']}` on {platform.machine()}, {os.cpu_count()} cores, loopback. "
        f"{last['clients']} clients send `/v1/retrieve` back to back for {last['seconds']:g} s "
        f"(distinct {last['query_words']}-word queries, top_k {last['top_k']}); meanwhile one prober GETs "
        f"`/healthz` on a new connection every {last['probe_interval'] * 1000:.0f} ms (or as soon as the previous "
        "probe answers, when it took longer), as a kubelet does. Idle: the same prober before the load starts. "
        "Percentiles are nearest-rank.", "",
        "| code | workers | /healthz idle p50 / p99 | /healthz loaded p50 | loaded p99 | loaded max "
        "| probes | retrieves/s | retrieve p50 / p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(table_row(run) for run in runs),
    ]
    if len(runs) > 1:
        lines += ["", "Earlier rows, each saved by its own run:", "",
                  *(f"- {run['label']}: `{run['command']}`" for run in runs[:-1])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent /v1/retrieve clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the load lasts")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="probing before the load starts")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probe starts")
    parser.add_argument("--query-words", type=int, default=200, help="words per retrieval query")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--workers", type=int, help="LYNX_RETRIEVER_WORKERS for the retriever (default: its own)")
    parser.add_argument("--label", default="this tree", help="names this run in the table")
    parser.add_argument("--save-json", type=Path, help="also write this run's figures as JSON")
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="an earlier --save-json run to show as a row before this one (repeatable)")
    parser.add_argument("--output", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 0 < args.seconds <= 600 and 0 < args.idle_seconds <= 60
            and args.probe_interval >= 0.01):
        parser.error("keep it bounded: 1-64 clients, at most 600 s of load and 60 s idle, probes at least 10 ms apart")

    # PYTHONPATH is how a run measures other code (e.g. `git archive` of an earlier commit): it belongs to the command.
    python_path = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if os.environ.get("PYTHONPATH") else ""
    command = python_path + shlex.join([".venv/bin/python", "scripts/bench_probes.py", *sys.argv[1:]])
    run = {**measure(args), "command": command}
    if args.save_json:
        args.save_json.write_text(json.dumps(run, indent=2) + "\n")
    runs = [json.loads(path.read_text()) for path in args.baseline] + [run]
    section = render(runs)
    print(section)
    if args.output:
        write_section(args.output, SECTION_HEADING, section)


if __name__ == "__main__":
    main()
