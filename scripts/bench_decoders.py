#!/usr/bin/env python3
"""Decoders chosen by load: one gateway in front of one decoder instance against the same gateway code in front of
two, on the same cores.

Two deployments side by side on free ports, each the real tokenizer, retriever and gateway: one decoder with
--threads threads, and two decoders with --threads / 2 each (`LYNX_GATEWAY_DECODER_URLS` lists both; the gateway
sends each request to the ready instance with the fewest in flight). Alternating, --repeats times, --concurrency
clients send `lynx load`'s chat completions back to back through one deployment's gateway for --seconds. Reported:
requests/s and tokens/s while every client was busy, latency p50/p99, and how the requests split between the two
instances, read from each decoder's own counter of the sequences it ended (not from the gateway's choice).

Usage: .venv/bin/python scripts/bench_decoders.py [--repeats 2] [--seconds 60] [--concurrency 32] [--threads 2]
       [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench_common import (
    Processes, bench_environment, add_tenant, load_average, load_spec, machine, measure_and_publish, median, running,
    saturate, warm_up,
)
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.topology import upstreams_environment

HEADING = "## Decoders chosen by load"
SEQUENCES = "lynx_decoder_sequences_total"


def sequences_ended(decoder: ServiceProcess) -> float:
    """The sequences this decoder ended, by its own counter."""
    text = httpx.get(f"{decoder.url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == SEQUENCES)


def deploy(processes: Processes, env: dict[str, str], work: Path, decoders: int, threads: int
           ) -> tuple[ServiceProcess, list[ServiceProcess]]:
    """Tokenizer, retriever, ``decoders`` decoders of ``threads`` threads each and a gateway over them; ready."""
    work.mkdir(parents=True, exist_ok=True)
    leaves = {name: start_service(name, env, work / f"{name}.log") for name in ("tokenizer", "retriever")}
    instances = [start_service("decoder", {**env, "LYNX_DECODER_THREADS": str(threads)}, work / f"decoder-{i}.log")
                 for i in range(decoders)]
    urls = ",".join(d.url for d in instances)
    gateway = start_service("gateway", {**env, "LYNX_GATEWAY_DECODER_URLS": urls, **upstreams_environment(
        {"tokenizer": leaves["tokenizer"].url, "retriever": leaves["retriever"].url, "decoder": instances[0].url})},
        work / "gateway.log")
    processes.add(*leaves.values(), *instances, gateway)
    wait_ready([*leaves.values(), *instances, gateway], 300)
    return gateway, instances


def measure(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lynx-decoders-bench-"))
    env = {**bench_environment(work), "OTEL_TRACES_EXPORTER": "none", "LYNX_GATEWAY_LOG_LEVEL": "WARNING"}
    key = add_tenant(env, "bench")
    layouts = {1: args.threads, 2: max(args.threads // 2, 1)}
    runs: dict[int, list[dict]] = {1: [], 2: []}
    load_before = load_average()
    with running() as processes:
        deployed = {n: deploy(processes, env, work / f"{n}-decoders", n, threads) for n, threads in layouts.items()}
        for gateway, _ in deployed.values():
            warm_up(gateway.url, key)
        for _ in range(args.repeats):
            for n, (gateway, instances) in deployed.items():
                before = [sequences_ended(d) for d in instances]
                run = saturate(load_spec(gateway.url, key, args.concurrency, seconds=args.seconds), {})
                split = [sequences_ended(d) - b for d, b in zip(instances, before, strict=True)]
                runs[n].append({"requests_per_s": run.requests_per_s, "tokens_per_s": run.tokens_per_s,
                                "p50": run.report.latency_s.p50, "p99": run.report.latency_s.p99,
                                "ok": run.report.ok, "requests": run.report.requests, "split": split})
    return {"runs": runs, "layouts": layouts, "load": (load_before, load_average())}


def render(args: argparse.Namespace, measured: dict) -> str:
    runs, layouts = measured["runs"], measured["layouts"]
    rows = []
    for n, layout_runs in runs.items():
        splits = ["/".join(f"{count:.0f}" for count in run["split"]) for run in layout_runs]
        shares = [max(run["split"]) / max(sum(run["split"]), 1) for run in layout_runs]
        rows.append(
            f"| {n} x {layouts[n]} thread{'s' if layouts[n] > 1 else ''} | "
            f"{median([r['requests_per_s'] for r in layout_runs]):.2f} | "
            f"{median([r['tokens_per_s'] for r in layout_runs]):.1f} | "
            f"{median([r['p50'] for r in layout_runs]):.1f} / {median([r['p99'] for r in layout_runs]):.1f} | "
            f"{sum(r['ok'] for r in layout_runs)} of {sum(r['requests'] for r in layout_runs)} | "
            f"{', '.join(splits)} ({'largest share ' + format(max(shares), '.1%') if n > 1 else 'one instance'}) |")
    before, after = measured["load"]
    return "\n".join([
        HEADING, "",
        f"Produced by `{args.command}` on {machine()}, load average {before:.1f} at the start and {after:.1f} at "
        "the end; medians of the repeats, alternating. Sequences per instance come from each decoder's own "
        f"`{SEQUENCES}`, one figure per repeat.", "",
        "| decoders x threads | requests/s | tokens/s | latency p50 / p99 (s) | answered | sequences per instance |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows, "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="the one decoder's threads; each of two gets half")
    parser.add_argument("--output", type=Path)
    measure_and_publish("bench_decoders.py", parser.parse_args(), HEADING, measure, render)


if __name__ == "__main__":
    main()
