#!/usr/bin/env python3
"""Pipeline overheads: the microservice tax (four processes vs one) and the observability tax (export on vs off).

1. Microservice tax: the same non-streaming 64-token chat completions (retrieval on, the gateway's default), one at
   a time, alternating between the four services as separate processes talking HTTP and the same four FastAPI apps
   in one process, whose gateway reaches the leaves through ``httpx.ASGITransport`` instead of sockets. Both sit
   behind their own uvicorn, so the client's hop to the gateway is the same on both sides. Both record spans and
   metrics and export nothing.
2. Observability tax: throughput at a concurrency that saturates the decoder, alternating runs between two
   deployments of the four services: "on" is `lynx up`'s configuration (spans over OTLP to an OpenTelemetry
   Collector forwarding to Jaeger, a Prometheus scraping every service), "off" sets OTEL_SDK_DISABLED=true.

Usage: .venv/bin/python scripts/bench_pipeline.py [--parts microservices observability] [--pairs 30]
       [--repeats 5] [--seconds 60] [--concurrency 8] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from unittest import mock

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from bench_common import (
    LEAVES, MAX_TOKENS, REQUEST_TIMEOUT_SECONDS, START_TIMEOUT_SECONDS, TRACING_OFF, Deployment, Processes,
    Saturation, bench_environment, histogram_totals, command_line, load_average, load_spec, machine, median, running,
    saturate, start_observed, start_plain, stop_on_sigterm, warm_up, write_section,
)
from lynx.decoder import app as decoder_app
from lynx.decoder.settings import DecoderSettings
from lynx.gateway import app as gateway_app
from lynx.gateway import upstream
from lynx.gateway.settings import GatewaySettings
from lynx.tools.load.driver import RequestRecord, send, served_model
from lynx.tools.load.report import percentile
from lynx.local.processes import ServiceProcess, free_port, start_process, wait_ready
from lynx.retriever import app as retriever_app
from lynx.service.shutdown import serve
from lynx.telemetry.request_id import forward_request_id
from lynx.tokenizer import app as tokenizer_app

MICROSERVICES_HEADING = "## Microservice tax: four processes vs one"
OBSERVABILITY_HEADING = "## Observability tax: tracing export and scraping on vs off"
SERVE_ONE_PROCESS = "--serve-one-process"
# Idle onnxruntime threads spin briefly after a call (LYNX_DECODER_SPIN_WAIT): let one side's go quiet before the
# other side's request starts, as scripts/bench_decoder.py does.
SETTLE_SECONDS = 0.3
SPLIT, FUSED = "four processes", "one process"
MODEL_CALL = "decoder model call, mean: "
STAGES = ("retrieve", "tokenize", "queue", "prefill", "decode", f"{MODEL_CALL}prefill", f"{MODEL_CALL}decode")
ON, OFF = "on", "off"
LEAF_URLS = {name: f"http://{name}.in-process" for name in LEAVES}
SENT_SPANS = "otelcol_exporter_sent_spans"
STEP_DURATION = "lynx_decoder_step_duration_seconds"
STAGE_DURATION = "lynx_stage_duration_seconds"
SPANS_SETTLE_SECONDS = 3.0
SPANS_WAIT_SECONDS = 60.0
TAX_TARGET = 1.05
THROUGHPUT_TARGET = 0.97


# --- one process ---------------------------------------------------------------------------------------------------

ClientFactory = Callable[[TracerProvider, str, httpx.Timeout], httpx.AsyncClient]


def in_process_clients(apps: dict[str, FastAPI]) -> ClientFactory:
    """Stands in for lynx.telemetry.tracing.instrumented_client (the request-id hook, client spans, traceparent),
    except that each leaf's URL reaches that leaf's app in this process through ASGITransport instead of a socket."""
    def client(provider: TracerProvider, base_url: str, timeout: httpx.Timeout) -> httpx.AsyncClient:
        leaf = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=httpx.ASGITransport(app=apps[base_url]),
                                 event_hooks={"request": [forward_request_id]})
        HTTPXClientInstrumentor.instrument_client(leaf, tracer_provider=provider)
        return leaf
    return client


def one_process_gateway() -> FastAPI:
    """The gateway app with the three leaf apps inside it: their lifespans run around the gateway's, and the
    gateway's upstream clients (Upstreams.connect) reach them in memory. Settings otherwise from the environment."""
    leaves = {LEAF_URLS["tokenizer"]: tokenizer_app.create_app(), LEAF_URLS["retriever"]: retriever_app.create_app(),
              LEAF_URLS["decoder"]: decoder_app.create_app(DecoderSettings(advertise_url=LEAF_URLS["decoder"]))}
    app = gateway_app.create_app(GatewaySettings(**{f"{name}_url": url for name, url in LEAF_URLS.items()}))
    gateway_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(gateway: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for leaf in leaves.values():
                await stack.enter_async_context(leaf.router.lifespan_context(leaf))
            stack.enter_context(mock.patch.object(upstream, "instrumented_client", in_process_clients(leaves)))
            await stack.enter_async_context(gateway_lifespan(gateway))
            yield

    app.router.lifespan_context = lifespan
    return app


def start_one_process(processes: Processes, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    """This script, serving the one-process pipeline behind uvicorn as `lynx serve gateway` would."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_process("one-process", [sys.executable, __file__, SERVE_ONE_PROCESS],
                           {**env, "LYNX_GATEWAY_PORT": str(port)}, log_dir / "one-process.log",
                           f"http://127.0.0.1:{port}")
    processes.add(server)
    wait_ready([server], START_TIMEOUT_SECONDS)
    return server


# --- 1. microservice tax -------------------------------------------------------------------------------------------

async def alternate(urls: dict[str, str], key: str, pairs: int) -> dict[str, list[RequestRecord]]:
    """``pairs`` requests to each side, one at a time, the order within each pair swapped every other pair."""
    spec = load_spec(next(iter(urls.values())), key, concurrency=1, requests=pairs, stream_share=0.0)
    records: dict[str, list[RequestRecord]] = {name: [] for name in urls}
    async with AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(httpx.AsyncClient(base_url=url,
                                                                           timeout=REQUEST_TIMEOUT_SECONDS))
                   for name, url in urls.items()}
        model = await served_model(next(iter(clients.values())), key)
        for index in range(pairs):
            for name in list(urls) if index % 2 == 0 else list(reversed(urls)):
                await asyncio.sleep(SETTLE_SECONDS)
                records[name].append(await send(clients[name], spec, model, index))
    return records


def microservice_tax(args: argparse.Namespace, work: Path) -> dict:
    env = bench_environment(work, OTEL_TRACES_EXPORTER="none")
    with running() as processes:
        split = start_plain(processes, env, work / "split")
        fused = start_one_process(processes, env, work / "fused")
        urls = {SPLIT: split.gateway_url, FUSED: fused.url}
        decoders = {SPLIT: split.services["decoder"].url, FUSED: fused.url}
        for url in urls.values():
            warm_up(url, split.key)
        load_start = load_average()
        before = {name: stage_totals(urls[name], decoders[name]) for name in urls}
        records = asyncio.run(alternate(urls, split.key, args.pairs))
        stages = {name: interval_means_ms(before[name], stage_totals(urls[name], decoders[name])) for name in urls}
    failed = {name: [r for r in rs if not r.ok] for name, rs in records.items()}
    if any(failed.values()):
        raise SystemExit(f"requests failed: {failed}")
    return {"records": records, "stages": stages, "load": (load_start, load_average())}


def stage_totals(gateway_url: str, decoder_url: str) -> dict[str, tuple[float, float]]:
    """The gateway's stage timings, and the decoder's model calls by phase (as ``model call: <phase>``)."""
    calls = histogram_totals(decoder_url, STEP_DURATION, "phase")
    return {**histogram_totals(gateway_url, STAGE_DURATION, "stage"),
            **{f"{MODEL_CALL}{phase}": totals for phase, totals in calls.items()}}


def mean_ms(records: list[RequestRecord]) -> float:
    return statistics.fmean(r.latency_s for r in records) * 1000


def latency_ms(records: list[RequestRecord], q: float) -> float:
    return percentile([r.latency_s for r in records], q) * 1000


def render_microservices(args: argparse.Namespace, result: dict) -> str:
    records = result["records"]
    split, fused = records[SPLIT], records[FUSED]
    ratio = latency_ms(split, 50) / latency_ms(fused, 50)
    differences = [(a.latency_s - b.latency_s) * 1000 for a, b in zip(split, fused, strict=True)]
    tokens = sorted({r.completion_tokens for rs in records.values() for r in rs})
    lines = [
        MICROSERVICES_HEADING, "",
        f"Produced by `{args.command}` on {machine()} (load average {result['load'][0]:.1f} at the start, "
        f"{result['load'][1]:.1f} at the end). {args.pairs} pairs of non-streaming `/v1/chat/completions` "
        f"(`max_tokens` {MAX_TOKENS}, temperature 0, retrieval on as the gateway's default, `lynx load`'s prompt), one "
        f"request at a time, alternating sides (the order swapped every other pair, {SETTLE_SECONDS * 1000:.0f} ms "
        "apart). Four processes: `lynx serve` of each service, the gateway calling the others over loopback HTTP. "
        "One process: the same four apps (`create_app` of each) in one uvicorn process, the gateway's upstream clients "
        "given `httpx.ASGITransport(app=leaf)` (`one_process_gateway` in the script). Both record spans "
        "(`OTEL_TRACES_EXPORTER=none`) and metrics, log at INFO, and use the default settings. Latency: the client's, "
        "from sending the request to the last byte; percentiles interpolated.", "",
        "| setup | requests | latency p50 | latency p95 | completion tokens |", "| --- | --- | --- | --- | --- |",
        *(f"| {name} | {len(rs)} | {latency_ms(rs, 50):.1f} ms | {latency_ms(rs, 95):.1f} ms "
          f"| {', '.join(str(t) for t in sorted({r.completion_tokens for r in rs}))} |" for name, rs in records.items()),
        "",
        f"Four processes / one process, median latency: **{ratio:.3f}x** (target <= {TAX_TARGET:.2f}x: "
        f"{'met' if ratio <= TAX_TARGET else 'missed'}); median of the pairs' differences "
        f"{median(differences):+.1f} ms.",
    ]
    stages = result["stages"]
    lines += [
        "", "Where the time goes, over the same requests: the mean of each stage as the gateway timed it (its own "
        "`lynx_stage_duration_seconds`: retrieve and tokenize are the gateway's calls, queue, prefill and decode the "
        "decoder's report for the request), the mean duration of one onnxruntime call of the decoder's engine "
        "(`lynx_decoder_step_duration_seconds`, by phase), and the "
        "client's mean latency:", "",
        "| stage | four processes | one process | difference |", "| --- | --- | --- | --- |",
        *(f"| {stage} | {stages[SPLIT][stage]:.1f} ms | {stages[FUSED][stage]:.1f} ms "
          f"| {stages[SPLIT][stage] - stages[FUSED][stage]:+.1f} ms |" for stage in STAGES if stage in stages[SPLIT]),
        f"| client latency | {mean_ms(split):.1f} ms | {mean_ms(fused):.1f} ms | {mean_ms(split) - mean_ms(fused):+.1f} ms |",
    ]
    if tokens != [MAX_TOKENS]:
        lines.append(f"Some answers ended before {MAX_TOKENS} tokens (at the end of sequence), alike on both sides.")
    return "\n".join(lines) + "\n"


# --- 2. observability tax ------------------------------------------------------------------------------------------

def sent_spans(deployment: Deployment) -> float:
    """Spans the collector has sent on to Jaeger (its own counter)."""
    text = httpx.get(deployment.collector_metrics_url, timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name.startswith(SENT_SPANS) and not sample.name.endswith("_created"))


def settled_sent_spans(deployment: Deployment) -> float:
    """The collector's sent-span count once it has stopped growing (the SDKs and the collector batch for seconds)."""
    deadline = time.monotonic() + SPANS_WAIT_SECONDS
    previous = sent_spans(deployment)
    while time.monotonic() < deadline:
        time.sleep(SPANS_SETTLE_SECONDS)
        current = sent_spans(deployment)
        if current == previous:
            break
        previous = current
    return previous


def observability_tax(args: argparse.Namespace, work: Path) -> dict:
    env = bench_environment(work)
    with running() as processes:
        deployments = {ON: start_observed(processes, env, work / ON),
                       OFF: start_plain(processes, {**env, **TRACING_OFF}, work / OFF)}
        for deployment in deployments.values():
            warm_up(deployment.gateway_url, deployment.key)
        spans_before = settled_sent_spans(deployments[ON])
        load_start = load_average()
        runs: dict[str, list[Saturation]] = {ON: [], OFF: []}
        steps: dict[str, list[dict[str, float]]] = {ON: [], OFF: []}
        for repeat in range(args.repeats):
            for side in (ON, OFF) if repeat % 2 == 0 else (OFF, ON):
                deployment = deployments[side]
                spec = load_spec(deployment.gateway_url, deployment.key, args.concurrency, seconds=args.seconds)
                before = decoder_steps(deployment)
                runs[side].append(saturate(spec, deployment.pids()))
                steps[side].append(interval_means_ms(before, decoder_steps(deployment)))
        spans = settled_sent_spans(deployments[ON]) - spans_before
    return {"runs": runs, "steps": steps, "spans": spans, "load": (load_start, load_average())}


def decoder_steps(deployment: Deployment) -> dict[str, tuple[float, float]]:
    return histogram_totals(deployment.services["decoder"].url, STEP_DURATION, "phase")


def interval_means_ms(before: dict[str, tuple[float, float]],
                      after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """A histogram's mean observation between two readings (histogram_totals), by label value, in milliseconds."""
    means = {}
    for phase, (total, count) in after.items():
        earlier_total, earlier_count = before.get(phase, (0.0, 0.0))
        if count > earlier_count:
            means[phase] = (total - earlier_total) * 1000 / (count - earlier_count)
    return means


def cpu_cell(runs: list[Saturation], process: str) -> str:
    per_request = [run.cpu_per_request_ms()[process] for run in runs if process in run.cpu]
    return f"{median(per_request):.1f} ms" if per_request else "-"


def render_observability(args: argparse.Namespace, result: dict) -> str:
    runs: dict[str, list[Saturation]] = result["runs"]
    steps: dict[str, list[dict[str, float]]] = result["steps"]

    def med(side: str, figure: Callable[[Saturation], float]) -> float:
        return median([figure(run) for run in runs[side]])

    rps = {side: med(side, lambda r: r.requests_per_s) for side in runs}
    tps = {side: med(side, lambda r: r.tokens_per_s) for side in runs}
    rps_ratio, tps_ratio = rps[ON] / rps[OFF], tps[ON] / tps[OFF]
    ok_on = sum(r.report.ok for r in runs[ON])
    processes = list(dict.fromkeys(name for rs in runs.values() for r in rs for name in r.cpu))
    met = "met" if min(rps_ratio, tps_ratio) >= THROUGHPUT_TARGET else "missed"
    lines = [
        OBSERVABILITY_HEADING, "",
        f"Produced by `{args.command}` on {machine()} (load average {result['load'][0]:.1f} at the start, "
        f"{result['load'][1]:.1f} at the end). Two deployments of the four services run side by side; {args.repeats} "
        f"runs of each, alternating (the order swapped every other repeat), each {args.concurrency} clients sending "
        f"`lynx load`'s chat completions back to back for {args.seconds:g} s (`max_tokens` {MAX_TOKENS}, half "
        "streamed, retrieval on). Throughput counts the answers that ended between a run's first answer and the end of "
        "its sending, when every client was busy (neither the ramp-up nor the drain). "
        "On: `lynx up`'s configuration on free ports: every span exported over OTLP/HTTP to the OpenTelemetry "
        "Collector (otelcol-lynx, config/otelcol.yaml), which forwards to Jaeger, and a Prometheus scraping the four "
        "services every 5 s (config/prometheus.yml). Off: `OTEL_SDK_DISABLED=true`, which lynx honours (its tracer "
        "provider is the SDK's, whose tracers are then no-ops: no span is made, no trace id returned), and no "
        "scraper. Metrics and the cost ledger have no off switch: both sides record them.", "",
        "| side | requests/s | output tokens/s | ok / sent | answers naming a trace | each run: requests/s |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {side} | {rps[side]:.2f} | {tps[side]:.1f} | {sum(r.report.ok for r in rs)} / "
          f"{sum(r.report.requests for r in rs)} | {sum(r.traced for r in rs)} "
          f"| {', '.join(f'{r.requests_per_s:.2f}' for r in rs)} |" for side, rs in runs.items()),
        "",
        f"On / off (medians): **{rps_ratio:.1%}** of the requests/s, **{tps_ratio:.1%}** of the output tokens/s "
        f"(target >= {THROUGHPUT_TARGET:.0%}: {met}). The collector sent {result['spans']:.0f} spans on to Jaeger during "
        f"the measured runs: {result['spans'] / max(ok_on, 1):.1f} per answered request.", "",
        "CPU time per answered request, by process (median of the runs):", "",
        "| process | on | off |", "| --- | --- | --- |",
        *(f"| {name} | {cpu_cell(runs[ON], name)} | {cpu_cell(runs[OFF], name)} |" for name in processes),
        "", "The decoder's model calls, mean duration by phase (its own `lynx_decoder_step_duration_seconds`, median "
        "of the runs):", "",
        "| phase | on | off |", "| --- | --- | --- |",
        *(f"| {phase} | {median([s[phase] for s in steps[ON]]):.1f} ms | {median([s[phase] for s in steps[OFF]]):.1f} ms |"
          for phase in sorted(steps[ON][0])),
    ]
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------------------------------

PARTS = {"microservices": (MICROSERVICES_HEADING, microservice_tax, render_microservices),
         "observability": (OBSERVABILITY_HEADING, observability_tax, render_observability)}


def main() -> None:
    if sys.argv[1:] == [SERVE_ONE_PROCESS]:
        serve(one_process_gateway())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--pairs", type=int, default=30, help="microservices: requests to each side")
    parser.add_argument("--repeats", type=int, default=5, help="observability: runs of each side")
    parser.add_argument("--seconds", type=float, default=60.0, help="observability: how long each run sends")
    parser.add_argument("--concurrency", type=int, default=8, help="observability: clients (the decoder has 8 KV slots)")
    parser.add_argument("--output", type=Path, help="write each part's section into this Markdown file")
    args = parser.parse_args()
    if not (1 <= args.pairs <= 500 and 1 <= args.repeats <= 20 and 0 < args.seconds <= 600
            and 1 <= args.concurrency <= 64):
        parser.error("keep it bounded: 1-500 pairs, 1-20 repeats of at most 600 s, 1-64 clients")
    args.command = command_line("bench_pipeline.py", sys.argv[1:])
    stop_on_sigterm()
    for part in args.parts:
        heading, measure, render = PARTS[part]
        work = Path(tempfile.mkdtemp(prefix=f"lynx-bench-{part}-"))
        section = render(args, measure(args, work))
        print(section, flush=True)
        if args.output:
            write_section(args.output, heading, section)


if __name__ == "__main__":
    main()
