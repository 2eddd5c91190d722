#!/usr/bin/env python3
"""Budget enforcement under load: 16 streaming clients drive one tenant past its daily cap.

Starts the real services as local processes on loopback (free ports, models from the cache), one or more
gateways reading the same decisions file, a Prometheus scraping the gateways and the budget loop, and the
local budget loop (`lynx serve budgets`) reading spend from that Prometheus. One tenant gets a small cap;
``--clients`` concurrent clients send streaming chat requests (retrieval on, questions from the quality set)
back to back through the gateways, round robin (waiting ``--backoff-seconds`` after a 429), until the loop
has published Blocked. Then the same clients send refused requests back to back for ``--blocked-seconds``.

Reported, from independent records: the ledger's own charge events (each gateway's JSON log) for the spend
timeline and the moment the cap was crossed; the clients' clocks for admissions and refusals; each
gateway's counter (what Prometheus scrapes) for the final spend; the answers' ``lynx.budget.reserved_eur``
against their ``lynx.cost`` for how well the worst-case estimate held.

Usage: .venv/bin/python scripts/bench_budget.py [--clients 16] [--cap 0.002] [--gateways 1] [--output docs/BENCHMARKS.md]
Bounded: at most --max-seconds of driving and --max-requests requests, then the blocked phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lynx.contracts.budgets import BudgetDecisions, BudgetSpec
from lynx.accounting.tenants import TenantRegistry
from lynx.tools.load.report import percentile
from lynx.tools.models.cache import build
from lynx.local.processes import ServiceProcess, free_port, start_service, wait_ready
from lynx.retriever.settings import RetrieverSettings
from lynx.service.polling import wait_for
from lynx.local.stack import find_binary, load_config, prometheus_config, start_prometheus
from lynx.local.topology import (
    UPSTREAMS, BudgetFiles, budget_loop_environment, lease_environment, models_environment, upstreams_environment,
)
from lynx_budget.local import FileStore

MODEL = "SmolLM2-135M-Instruct"
TENANT = "bench-capped"
QUESTIONS = [q["question"] for q in json.loads(
    (Path(__file__).resolve().parents[1] / "services/lynx/tools/quality/questions.json").read_text())]
# One marked block per number of gateways, so runs with 1 and with N gateways sit side by side.
MARKERS = "<!-- budget-bench-{}:start -->", "<!-- budget-bench-{}:end -->"


@dataclass
class Sent:
    started: float  # unix time, the client's clock
    ended: float
    status: int
    cost: float  # what the ledger charged (0 when refused before the pipeline)
    reserved: float | None
    headers_after: float  # seconds to the response's status line: admission, reservation and the first token


@dataclass
class Bed:
    gateways: list[ServiceProcess]
    upstream: dict[str, ServiceProcess]
    loop: ServiceProcess
    prometheus: ServiceProcess
    decisions: Path

    def state(self) -> str | None:
        try:
            decision = BudgetDecisions.model_validate_json(self.decisions.read_text()).tenants.get(TENANT)
        except (OSError, ValueError):
            return None
        return decision.state if decision else None

    def processes(self) -> list[ServiceProcess]:
        return [*self.gateways, *self.upstream.values(), self.loop, self.prometheus]


def start(work: Path, args: argparse.Namespace) -> Bed:
    models = build("int4")
    budget_files = BudgetFiles.in_folder(work)
    decisions = budget_files.decisions
    env = {**os.environ, **models_environment(models), "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
           "LYNX_GATEWAY_TENANTS_FILE": str(work / "tenants.json"), "LYNX_GATEWAY_BUDGETS_FILE": str(decisions)}
    upstream = {name: start_service(name, env, work / f"{name}.log") for name in UPSTREAMS}
    loop_port = free_port()
    leases = lease_environment(f"http://127.0.0.1:{loop_port}", budget_files.lease_token) if args.leases else {}
    gateway_env = {**env, **upstreams_environment({n: s.url for n, s in upstream.items()}), **leases}
    gateways = [start_service("gateway", gateway_env, work / f"gateway-{i}.log") for i in range(args.gateways)]
    config = prometheus_config(load_config("prometheus.yml"), {"gateway": "", "budgets": f"127.0.0.1:{loop_port}"})
    for job in config["scrape_configs"]:
        if job["job_name"] == "lynx-gateway":  # every replica, as a ServiceMonitor would
            job["static_configs"] = [{"targets": [g.url.removeprefix("http://") for g in gateways]}]
    config["global"]["scrape_interval"] = f"{args.scrape_seconds:g}s"
    prometheus = start_prometheus(find_binary("prometheus"), config, work / "prometheus")
    loop = start_service("budgets", {**env, **budget_loop_environment(budget_files, prometheus.url, args.loop_seconds)},
                         work / "budgets.log", port=loop_port)
    bed = Bed(gateways, upstream, loop, prometheus, decisions)
    try:
        wait_ready(bed.processes(), 180)
    except Exception:
        stop(bed)
        raise
    return bed


def stop(bed: Bed) -> None:
    for process in bed.processes():
        process.stop()


async def drive(bed: Bed, key: str, args: argparse.Namespace) -> tuple[list[Sent], dict[str, float]]:
    """Clients send streaming requests until the loop has published Blocked, within the bounds; returns what they
    sent and when (unix time) each state was first published."""
    sent: list[Sent] = []
    published: dict[str, float] = {}
    finish = time.monotonic() + args.max_seconds

    def driving() -> bool:
        return time.monotonic() < finish and len(sent) < args.max_requests and "Blocked" not in published

    async def watch() -> None:
        while driving():
            state = bed.state()
            if state and state not in published:
                published[state] = time.time()
            await asyncio.sleep(0.05)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        gateway = bed.gateways[number % len(bed.gateways)].url
        turn = number
        while driving():
            body = {"model": MODEL, "temperature": 0, "max_tokens": args.max_tokens, "stream": True,
                    "messages": [{"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]}]}
            turn += args.clients
            started = time.time()
            async with http.stream("POST", f"{gateway}/v1/chat/completions", json=body) as response:
                headers_after = time.time() - started
                text = (await response.aread()).decode()
            record = Sent(started, time.time(), response.status_code, 0.0, None, headers_after)
            if response.status_code == 200:
                final = next(json.loads(line[6:]) for line in reversed(text.splitlines())
                             if line.startswith("data: {") and '"lynx"' in line)
                record.cost, record.reserved = final["lynx"]["cost"]["total"], final["lynx"]["budget"]["reserved_eur"]
            else:
                record.cost = (json.loads(text).get("lynx") or {}).get("cost", {}).get("total", 0.0)
            sent.append(record)
            if response.status_code == 429:  # a client told the budget is spent waits before it asks again
                await asyncio.sleep(args.backoff_seconds)

    async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=args.clients)) as http:
        await asyncio.gather(watch(), *(client(n, http) for n in range(args.clients)))
    return sent, published


async def hammer(bed: Bed, key: str, args: argparse.Namespace) -> tuple[int, list[float], float]:
    """The blocked tenant's refusals: (count, latencies, elapsed seconds) with the same number of clients."""
    latencies: list[float] = []
    statuses: set[int] = set()
    finish = time.monotonic() + args.blocked_seconds
    body = {"model": MODEL, "max_tokens": args.max_tokens, "messages": [{"role": "user", "content": QUESTIONS[0]}]}

    async def client(number: int, http: httpx.AsyncClient) -> None:
        gateway = bed.gateways[number % len(bed.gateways)].url
        while time.monotonic() < finish:
            began = time.perf_counter()
            response = await http.post(f"{gateway}/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - began)
            statuses.add(response.status_code)

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=args.clients)) as http:
        await asyncio.gather(*(client(n, http) for n in range(args.clients)))
    if statuses != {429}:
        raise SystemExit(f"the blocked phase got statuses {sorted(statuses)}, not only 429")
    return len(latencies), latencies, time.perf_counter() - began


def charges(bed: Bed) -> list[tuple[float, float]]:
    """(unix time, EUR) of every charge of the tenant, from each gateway's own ledger events."""
    found = []
    for gateway in bed.gateways:
        for line in gateway.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") in ("request_finished", "request_failed") and entry.get("tenant") == TENANT:
                    at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
                    found.append((at, entry["cost_eur"]))
    return sorted(found)


def counter(url: str, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def report(bed: Bed, args: argparse.Namespace, sent: list[Sent], published: dict[str, float],
           blocked: tuple[int, list[float], float]) -> str:
    ledger = charges(bed)
    spent = sum(counter(g.url, "lynx_tenant_cost_eur_total", {"tenant": TENANT}) for g in bed.gateways)
    running, crossed_at = 0.0, None
    for at, eur in ledger:
        running += eur
        if running > args.cap and crossed_at is None:
            crossed_at = at
    admitted = [s for s in sent if s.status == 200]
    refused_charged = [s for s in sent if s.status == 429 and s.cost]
    refused_free = [s for s in sent if s.status == 429 and not s.cost]
    other = [s for s in sent if s.status not in (200, 429)]
    first_429 = min((s.ended for s in sent if s.status == 429), default=None)
    first_free = min((s.ended for s in refused_free), default=None)
    reasons = {r: sum(counter(g.url, "lynx_budget_refused_requests_total", {"tenant": TENANT, "reason": r})
                      for g in bed.gateways)
               for r in ("insufficient", "no_lease_room", "controller_unreachable", "rebuilding", "blocked")}
    ratio = max(s.cost / s.reserved for s in admitted if s.reserved)
    waits = [s.headers_after for s in admitted]
    driving_seconds = max(s.ended for s in sent) - sent[0].started
    renewals = sum(counter(g.url, "lynx_gateway_lease_renewals_total", {}) for g in bed.gateways) if args.leases else 0
    spent_at_first_429 = sum(eur for at, eur in ledger if first_429 is not None and at <= first_429)
    count, latencies, elapsed = blocked
    if crossed_at is None:
        crossing = f"never: spend stopped at {spent / args.cap:.2%} of the cap"
        after = "n/a"
        to_first = "n/a"
    else:
        crossing = f"{crossed_at - sent[0].started:.1f} s after the first request"
        after = f"{sum(1 for s in admitted if s.started > crossed_at)}"
        to_first = (f"first 429 {first_429 - crossed_at:+.2f} s; first refusal at admission "
                    f"{first_free - crossed_at:+.2f} s" if first_free else "no refusal at admission")
        to_first += f"; Blocked published {published['Blocked'] - crossed_at:+.2f} s"
    command = ("python scripts/bench_budget.py" + "".join(f" --{k.replace('_', '-')}" + (f" {v}" if v != "" else "")
                                                         for k, v in (
        ("clients", args.clients), ("gateways", args.gateways), ("leases" if args.leases else "no-leases", ""),
        ("cap", args.cap), ("max_tokens", args.max_tokens),
        ("scrape_seconds", args.scrape_seconds), ("loop_seconds", args.loop_seconds),
        ("backoff_seconds", args.backoff_seconds), ("max_seconds", args.max_seconds),
        ("blocked_seconds", args.blocked_seconds))))
    label = f"{args.gateways} gateway{'s' if args.gateways > 1 else ''}, {'leases' if args.leases else 'no leases'}"
    return "\n".join([
        f"### {label}: `{command}`", "",
        "| figure | value |", "| --- | --- |",
        f"| requests sent while driving | {len(sent)}: {len(admitted)} served, {len(refused_charged)} refused at "
        f"reservation (charged for retrieval + tokenization), {len(refused_free)} refused at admission, "
        f"{len(other)} other |",
        f"| gateway refusals by reason | {', '.join(f'{r} {n:.0f}' for r, n in reasons.items() if n)} |",
        f"| spend at the end (the gateways' counters) | {spent:.6g} EUR for a cap of {args.cap:g} EUR |",
        f"| overshoot | {max(spent - args.cap, 0):.3g} EUR ({max(spent - args.cap, 0) / args.cap:.2%} of the cap) |",
        f"| cap crossed (ledger events) | {crossing} |",
        f"| requests admitted after the cap was crossed | {after} |",
        f"| from crossing the cap to the first 429 | {to_first} |",
        f"| spent when the first 429 came | {spent_at_first_429 / args.cap:.0%} of the cap (in-flight worst cases no "
        "longer fit) |",
        f"| worst real cost / reservation (served answers) | {ratio:.2f} |",
        f"| served answers: time to the status line p50 / p99 (admission, reservation, first token) | "
        f"{statistics.median(waits) * 1000:.0f} / {percentile(waits, 99) * 1000:.0f} ms |",
        f"| lease renewals | {renewals:.0f} ({renewals / driving_seconds:.1f}/s over {driving_seconds:.0f} s of "
        "driving) |",
        f"| blocked tenant: 429 throughput | {count / elapsed:.0f} requests/s over {elapsed:.1f} s ({count} requests, "
        f"{args.clients} clients) |",
        f"| blocked tenant: 429 latency p50 / p99 | {statistics.median(latencies) * 1000:.1f} / "
        f"{percentile(latencies, 99) * 1000:.1f} ms |",
        f"| load average (1 min) at start / end | {args.load_before:.1f} / {os.getloadavg()[0]:.1f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--leases", action=argparse.BooleanOptionalAction, default=True,
                        help="gateways admit within spend leases from the budget loop (--no-leases: each enforces the "
                             "published decisions alone, as before)")
    parser.add_argument("--cap", type=float, default=0.002, help="the tenant's daily cap in EUR")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--scrape-seconds", type=float, default=5.0, help="Prometheus' scrape interval (lynx up: 5)")
    parser.add_argument("--loop-seconds", type=float, default=15.0, help="the budget loop's interval (default 15)")
    parser.add_argument("--backoff-seconds", type=float, default=0.25,
                        help="how long a client waits after a 429 before its next request")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--blocked-seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, help="replace (or append) the marked section of this file")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    if find_binary("prometheus") is None:
        raise SystemExit("needs `prometheus` (scripts/build_tools.sh prometheus)")
    work = Path(tempfile.mkdtemp(prefix="lynx-budget-bench-"))
    bed = start(work, args)
    try:
        registry = TenantRegistry(work / "tenants.json")
        key, warm = registry.add(TENANT), registry.add("bench-warmup")
        httpx.post(f"{bed.gateways[0].url}/v1/chat/completions", headers={"Authorization": f"Bearer {warm}"},
                   json={"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}, timeout=120)
        files = BudgetFiles.in_folder(work)
        FileStore(files.budgets, files.state).put(BudgetSpec(tenant=TENANT, daily_cap_eur=args.cap))
        wait_for(lambda: bed.state() == "Ok", 120, "the budget loop's first decision", interval=0.2, error=SystemExit)
        sent, published = asyncio.run(drive(bed, key, args))
        if "Blocked" not in published:
            raise SystemExit(f"the tenant is {bed.state()} after driving; raise --max-seconds")
        blocked = asyncio.run(hammer(bed, key, args))
        section = report(bed, args, sent, published, blocked)
    finally:
        stop(bed)
    print(section)
    if args.output:
        start_marker, end_marker = (m.format(f"{args.gateways}{'-leases' if args.leases else ''}") for m in MARKERS)
        text = args.output.read_text()
        if start_marker in text:
            before, rest = text.split(start_marker, 1)
            text = before + start_marker + "\n" + section + "\n" + rest[rest.index(end_marker):]
        else:
            text = text.rstrip("\n") + f"\n\n{start_marker}\n{section}\n{end_marker}\n"
        args.output.write_text(text)


if __name__ == "__main__":
    main()
