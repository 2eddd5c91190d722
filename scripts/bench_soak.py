#!/usr/bin/env python3
"""Soak: open-loop arrivals at a fraction of the measured capacity for minutes through `lynx up`'s stack; errors,
each service's memory at the start and the end, and which dashboard panels the stack's own Prometheus can fill.

Starts `lynx up` (the four services, the budget loop, Jaeger behind the OpenTelemetry Collector, the trace auditor and
a Prometheus, on lynx's default ports; it refuses to run if anything already listens there) and stops it with
`lynx down` however the run ends. Two tenants of its own: one with a roomy daily budget sends all the load, one whose
budget no request fits sends one request every --probe-seconds, as the dashboards test does, so that the refusal
panels have something to show. Then:

1. capacity: --concurrency clients send `lynx load`'s chat completions back to back for --capacity-seconds; the
   throughput while every client was busy is the capacity (this run also warms the stack up);
2. each service's resident memory (its own /metrics), then --minutes of arrivals at --load x that capacity
   (exponential inter-arrival times, seeded, each request sent when its time comes whatever is under way), then the
   memory again once the last answer is in;
3. every panel query of every dashboard (lynx.tools.dashboards.queries), evaluated over the soak's window by the stack's
   Prometheus once it has scraped the end.

Usage: .venv/bin/python scripts/bench_soak.py [--minutes 5] [--load 0.8] [--capacity-seconds 90]
       [--concurrency 8] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from bench_common import (
    MAX_TOKENS, REQUEST_TIMEOUT_SECONDS, Saturation, arrival_offsets, at_offsets, load_average, load_spec, machine,
    measure_and_publish, saturate,
)
from lynx.local.registry import run_dir
from lynx.local.topology import SERVEABLE, Topology
from lynx.contracts.budgets import BudgetDecisions, BudgetSpec
from lynx.tools.dashboards.queries import PanelQuery, panel_queries
from lynx.service.files import locked, write_atomically
from lynx.gateway.settings import GatewaySettings
from lynx.accounting.tenants import TenantRegistry
from lynx.tools.load.driver import LoadSpec, RequestRecord, served_model
from lynx.tools.load.memory import sample_memory
from lynx.tools.load.report import MIB, Percentiles, errors_by_type
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError
from lynx.service.polling import wait_for
from lynx_budget.local import FileStore, LocalBudgetSettings

SECTION_HEADING = "## Soak at a fraction of capacity"
LYNX = Path(sys.executable).with_name("lynx")
LYNX_UP = Topology.configured()
PROMETHEUS = LYNX_UP.prometheus_url
LYNX_UP_PORTS = LYNX_UP.all_ports()
SERVED, REFUSED = "soak", "soak-refused"
ROOMY_CAP_EUR = 100.0
NO_REQUEST_FITS_EUR = 1e-6
DECISIONS_TIMEOUT_SECONDS = 120
SCRAPE_SECONDS = 5.0  # config/prometheus.yml
QUERY_STEP_SECONDS = 15
RSS_GROWTH_LIMIT = 0.05


# --- the stack -----------------------------------------------------------------------------------------------------

def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def lynx_up() -> Iterator[None]:
    """`lynx up` for the length of the block, `lynx down` after it, however it ends."""
    busy = [port for port in LYNX_UP_PORTS if listening(port)]
    if busy:
        raise SystemExit(f"something already listens on lynx up's ports {busy}: stop it (`lynx down`) first")
    try:
        subprocess.run([str(LYNX), "up"], check=True, stdout=subprocess.DEVNULL)
        yield
    finally:
        subprocess.run([str(LYNX), "down"], check=False)


@contextmanager
def tenant_budgets(specs: list[BudgetSpec]) -> Iterator[FileStore]:
    """The local budget loop's budgets file with ``specs`` added, put back as it was afterwards."""
    settings = LocalBudgetSettings()
    saved = settings.budgets_file.read_text() if settings.budgets_file.exists() else None
    store = FileStore(settings.budgets_file, settings.state_file)
    try:
        for spec in specs:
            store.put(spec)
        yield store
    finally:
        with locked(settings.budgets_file):  # the running budget loop reads and rewrites it meanwhile
            if saved is None:
                settings.budgets_file.unlink(missing_ok=True)
            else:
                write_atomically(settings.budgets_file, saved)


def await_decisions(tenants: set[str]) -> None:
    """Until the budget loop has published a decision for each of ``tenants`` (it runs every 15 s)."""
    decisions = GatewaySettings().budgets_file
    def published() -> bool:
        try:
            return BudgetDecisions.model_validate_json(decisions.read_text()).tenants.keys() >= tenants
        except (OSError, ValueError):
            return False

    wait_for(published, DECISIONS_TIMEOUT_SECONDS, f"the budget loop's decisions for {sorted(tenants)}", interval=1,
             error=SystemExit)


def service_urls() -> dict[str, str]:
    return {name: LYNX_UP.url(name) for name in SERVEABLE}


def service_pids() -> dict[str, int]:
    """The pid of each lynx service `lynx up` started (its pids.json)."""
    return {name: pid for name, pid in json.loads((run_dir() / "pids.json").read_text()).items() if name in SERVEABLE}


# --- the soak ------------------------------------------------------------------------------------------------------

async def soak(spec: LoadSpec, probe: LoadSpec, offsets: list[float], probe_seconds: float,
               seconds: float) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """The open-loop load and, beside it, the refused tenant's probes: (load records, probe records)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=spec.base_url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as client:
        model = await served_model(client, spec.keys[0])
        started = time.monotonic()
        probes = [probe_seconds * (n + 0.5) for n in range(int(seconds // probe_seconds))]
        load, refused = await asyncio.gather(at_offsets(client, spec, model, offsets, started),
                                             at_offsets(client, probe, model, probes, started))
    return load, refused


# --- the panels ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PanelResult:
    query: PanelQuery
    series: int
    notes: tuple[str, ...]  # Prometheus' warnings and infos: a panel must not be a doubtful query


def evaluate(prometheus: PrometheusClient, query: PanelQuery, start: float, end: float) -> PanelResult:
    """What Grafana would ask for the soak's window: the value at its end for an instant target, else a range. A
    query Prometheus refuses or answers with warnings or infos has no series and says why."""
    try:
        if query.instant:
            result = prometheus.query(query.expr, end)
        else:
            result = prometheus.query_range(query.expr, start, end, QUERY_STEP_SECONDS)
    except PrometheusError as error:
        return PanelResult(query, 0, (error.detail,))
    return PanelResult(query, len(result), ())


def await_final_scrape(after: float) -> None:
    """Until Prometheus has scraped every service once after ``after`` (unix time)."""
    deadline = time.monotonic() + 10 * SCRAPE_SECONDS
    while time.monotonic() < deadline:
        with PrometheusClient(PROMETHEUS) as prometheus:
            targets = prometheus.active_targets()
        if all(t["health"] == "up" and t["lastScrape"] and parse_time(t["lastScrape"]) > after for t in targets):
            return
        time.sleep(1)


def parse_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# --- the run -------------------------------------------------------------------------------------------------------

def measure(args: argparse.Namespace) -> dict:
    registry = TenantRegistry(GatewaySettings().tenants_file)
    gateway = service_urls()["gateway"]
    specs = [BudgetSpec(tenant=SERVED, daily_cap_eur=ROOMY_CAP_EUR),
             BudgetSpec(tenant=REFUSED, daily_cap_eur=NO_REQUEST_FITS_EUR)]
    with lynx_up(), tenant_budgets(specs):
        key, refused_key = registry.add(SERVED), registry.add(REFUSED)
        await_decisions({SERVED, REFUSED})
        pids = service_pids()
        load_start = load_average()
        capacity = saturate(load_spec(gateway, key, args.concurrency, seconds=args.capacity_seconds), pids)
        rate = args.load * capacity.requests_per_s
        offsets = arrival_offsets(rate, args.minutes * 60, args.seed)
        memory_start = asyncio.run(sample_memory(service_urls()))
        soak_start = time.time()
        spec = load_spec(gateway, key, concurrency=1, seconds=args.minutes * 60)
        probe = load_spec(gateway, refused_key, concurrency=1, seconds=args.minutes * 60, stream_share=0.0)
        records, probes = asyncio.run(soak(spec, probe, offsets, args.probe_seconds, args.minutes * 60))
        soak_end = time.time()
        memory_end = asyncio.run(sample_memory(service_urls()))
        await_final_scrape(soak_end)
        with PrometheusClient(PROMETHEUS, timeout_seconds=30) as prometheus:
            panels = [evaluate(prometheus, q, soak_start, time.time()) for q in panel_queries()]
    return {"capacity": capacity, "rate": rate, "records": records, "probes": probes, "window": (soak_start, soak_end),
            "memory": (memory_start, memory_end), "panels": panels, "load": (load_start, load_average())}


def render(args: argparse.Namespace, result: dict) -> str:
    capacity: Saturation = result["capacity"]
    records: list[RequestRecord] = result["records"]
    probes: list[RequestRecord] = result["probes"]
    start, end = result["window"]
    memory_start, memory_end = result["memory"]
    failed = [r for r in records if not r.ok]
    latency = Percentiles.of([r.latency_s for r in records if r.ok])
    growths = {name: (memory_end[name] - memory_start[name]) / memory_start[name]
               for name in memory_start if memory_start[name] and memory_end[name]}
    panels: list[PanelResult] = result["panels"]
    by_panel: dict[tuple[str, str], list[PanelResult]] = {}
    for panel in panels:
        by_panel.setdefault((panel.query.dashboard, panel.query.panel), []).append(panel)
    populated = [key for key, results in by_panel.items() if all(r.series and not r.notes for r in results)]
    lines = [
        SECTION_HEADING, "",
        f"Produced by `{args.command}` on {machine()} (load average {result['load'][0]:.1f} at the start, "
        f"{result['load'][1]:.1f} at the end), against `lynx up`'s stack on its default ports (the four services with "
        "their default settings, the budget loop, Jaeger behind the OpenTelemetry Collector, the trace auditor, a "
        "Prometheus scraping every 5 s), started and stopped by the script.", "",
        f"Capacity, measured first on the same stack: {args.concurrency} clients sending `lynx load`'s chat completions "
        f"(`max_tokens` {MAX_TOKENS}, half streamed, retrieval on) back to back for {args.capacity_seconds:g} s: "
        f"**{capacity.requests_per_s:.2f} requests/s** ({capacity.tokens_per_s:.1f} output tokens/s) while every "
        f"client was busy. Soak: {len(records)} requests of the same kind over {args.minutes * 60:.0f} s, exponential "
        f"inter-arrival times (seed {args.seed}) at {args.load:.0%} of that, {result['rate']:.2f} requests/s; each "
        "sent at its time whatever was under way (open loop).", "",
        "| figure | value |", "| --- | --- |",
        f"| requests sent / answered / failed | {len(records)} / {len(records) - len(failed)} / **{len(failed)}** |",
        f"| arrival rate achieved | {len(records) / (args.minutes * 60):.2f} requests/s; the last answer came "
        f"{end - start:.0f} s after the start |",
        f"| latency p50 / p95 / p99 | {latency.p50:.2f} / {latency.p95:.2f} / {latency.p99:.2f} s |",
        f"| refusal probes (the tenant no request fits) | {len(probes)}, answered "
        f"{', '.join(sorted({str(p.status) for p in probes}))} |",
    ]
    if failed:
        kinds = ", ".join(f"{e.outcome} {e.error_type}: {e.count}" for e in errors_by_type(failed))
        lines.append(f"| failures by type | {kinds} |")
    lines += ["", "Resident memory of each service (its own `process_resident_memory_bytes`), once the capacity run had "
              "warmed it up and once the soak's last answer was in:", "",
              "| service | start | end | growth |", "| --- | --- | --- | --- |",
              *(f"| {name} | {mib(memory_start[name])} | {mib(memory_end[name])} | "
                f"{growths[name]:+.1%} |" if name in growths else f"| {name} | n/a | n/a | n/a |" for name in memory_start),
              "", f"Worst growth {max(growths.values()):+.1%} (target < {RSS_GROWTH_LIMIT:.0%}: "
              f"{'met' if max(growths.values()) < RSS_GROWTH_LIMIT else 'missed'}).", "",
              f"Dashboard panels: every target of every panel of dashboards/ (`lynx.tools.dashboards.queries`, Grafana's "
              f"variables as the dashboards test sets them), as a range query over the soak (step {QUERY_STEP_SECONDS} s)"
              f" once Prometheus had scraped its end (an instant query at the end for instant targets, as Grafana asks "
              f"them). **{len(populated)} of {len(by_panel)} panels** returned data for "
              "every target, with no warning:", "",
              "| dashboard | panel | targets with data | notes |", "| --- | --- | --- | --- |",
              *(f"| {board} | {title} | {sum(1 for r in results if r.series)} / {len(results)} "
                f"| {'; '.join(n for r in results for n in r.notes)} |" for (board, title), results in by_panel.items())]
    return "\n".join(lines) + "\n"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the soak sends")
    parser.add_argument("--load", type=float, default=0.8, help="the arrival rate, as a fraction of the capacity")
    parser.add_argument("--capacity-seconds", type=float, default=90.0, help="how long the capacity run sends")
    parser.add_argument("--concurrency", type=int, default=8, help="the capacity run's clients (the decoder has 8 KV slots)")
    parser.add_argument("--probe-seconds", type=float, default=30.0, help="between two refused tenant's requests")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    if not (0 < args.minutes <= 60 and 0 < args.load <= 1 and 0 < args.capacity_seconds <= 600
            and 1 <= args.concurrency <= 64 and 1 <= args.probe_seconds <= 600):
        parser.error("keep it bounded: at most 60 minutes at up to the capacity, a capacity run of at most 600 s "
                     "with 1-64 clients, probes 1-600 s apart")
    measure_and_publish("bench_soak.py", args, SECTION_HEADING, measure, render)


if __name__ == "__main__":
    main()
