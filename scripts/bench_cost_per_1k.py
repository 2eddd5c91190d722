#!/usr/bin/env python3
"""Cost per 1k output tokens on this machine: mean and p95 over a mixed workload, from the real services.

Starts the four services as local processes (free ports, models from the cache), sends a fixed,
seeded mix of chat requests (short and long answers, with and without retrieval) at a few
concurrent clients, and reports cost x 1000 / completion tokens per request: the exact mean and
p95 over the requests, next to what the gateway's histogram gives (sum / count, and the p95 the
way Prometheus' histogram_quantile interpolates it), so a dashboard's figures can be checked.

Usage: .venv/bin/python scripts/bench_cost_per_1k.py [--requests 48] [--concurrency 4] [--output docs/COSTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lynx.accounting.tenants import TenantRegistry
from lynx.tools.models.cache import build
from lynx.local.processes import start_service, wait_ready
from lynx.local.topology import UPSTREAMS, models_environment, upstreams_environment
from lynx.retriever.settings import RetrieverSettings

MODEL = "SmolLM2-135M-Instruct"
QUESTIONS = ("How do I define a function in Python?", "What is a list comprehension?", "Explain dictionaries.",
             "How do I read a file line by line?", "What does the for statement do?", "What is a module?",
             "Write a short poem about the sea.", "Summarise what exceptions are for.")
START, END = "<!-- per1k:start -->", "<!-- per1k:end -->"


def workload(count: int, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    return [{"model": MODEL, "temperature": 0, "max_tokens": rng.choice((8, 32, 64, 128)),
             "retrieval_top_k": rng.choice((0, 3)),
             "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]} for _ in range(count)]


async def send_all(url: str, key: str, bodies: list[dict], concurrency: int) -> list[dict]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        async def one(body: dict) -> dict:
            async with limit:
                response = await client.post(f"{url}/v1/chat/completions", json=body)
                response.raise_for_status()
                return response.json()
        return await asyncio.gather(*(one(b) for b in bodies))


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative (le, count) buckets, sum, count) of a histogram in Prometheus text."""
    buckets, total, count = [], 0.0, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_sum":
                total = sample.value
            elif sample.name == f"{name}_count":
                count = sample.value
    return sorted(buckets), total, count


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket the rank falls in."""
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    models = build("int4")
    work = Path(tempfile.mkdtemp(prefix="lynx-per1k-"))
    env = {**os.environ, **models_environment(models), "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
           "LYNX_GATEWAY_TENANTS_FILE": str(work / "tenants.json")}
    upstream = {name: start_service(name, env, work / f"{name}.log") for name in UPSTREAMS}
    gateway = start_service("gateway", {**env, **upstreams_environment({n: s.url for n, s in upstream.items()})},
                            work / "gateway.log")
    services = [*upstream.values(), gateway]
    try:
        wait_ready(services, 180)
        key = TenantRegistry(work / "tenants.json").add("bench")
        bodies = asyncio.run(send_all(gateway.url, key, workload(args.requests), args.concurrency))
        per_1k = sorted(b["lynx"]["cost"]["total"] * 1000 / b["usage"]["completion_tokens"] for b in bodies)
        buckets, total, count = histogram(httpx.get(f"{gateway.url}/metrics").text, "lynx_cost_eur_per_1k_output_tokens")
    finally:
        for service in reversed(services):
            service.stop()
    exact_p95 = per_1k[min(len(per_1k) - 1, round(0.95 * (len(per_1k) - 1)))]
    command = "python scripts/bench_cost_per_1k.py" + "".join(
        f" --{k} {v}" for k, v in (("requests", args.requests), ("concurrency", args.concurrency)))
    section = "\n".join([
        START, f"Measured with `{command}` ({args.requests} chat requests, max_tokens 8 to 128, half with retrieval, "
        f"{args.concurrency} concurrent clients, default rates):", "",
        "| figure | per request (exact) | from the histogram (what the dashboard shows) |", "| --- | --- | --- |",
        f"| mean EUR per 1k output tokens | {statistics.fmean(per_1k):.3g} | {total / count:.3g} |",
        f"| p95 EUR per 1k output tokens | {exact_p95:.3g} | {bucket_quantile(0.95, buckets):.3g} |",
        f"| median / max | {statistics.median(per_1k):.3g} / {per_1k[-1]:.3g} | |", END])
    print(section)
    if args.output:
        text = args.output.read_text()
        args.output.write_text(text[:text.index(START)] + section + text[text.index(END) + len(END):])


if __name__ == "__main__":
    main()
