"""What the pipeline, capacity and soak benchmarks share: deployments of the real services on free ports (with or
without the observability stack behind them), saturating them with `lynx load`'s driver, each process's CPU time,
and writing a benchmark's own section of docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lynx.local.stopping import stop_processes
from lynx.local.topology import UPSTREAMS, models_environment, upstreams_environment
from lynx.gateway.settings import GatewaySettings
from lynx.accounting.tenants import TenantRegistry
from lynx.tools.load.driver import LoadSpec, RequestRecord, drive, send
from lynx.tools.load.report import LoadReport, summarize
from lynx.tools.models.cache import build
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.stack import (
    find_binary, load_config, prometheus_config, start_collector, start_jaeger, start_prometheus,
)

LEAVES = UPSTREAMS
MAX_TOKENS = 64
START_TIMEOUT_SECONDS = 300
REQUEST_TIMEOUT_SECONDS = 300
# The standard OpenTelemetry switch: lynx's TracerProvider is the SDK's, which then hands out no-op tracers.
TRACING_OFF = {"OTEL_SDK_DISABLED": "true"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark through its ``finally`` blocks, so every process it started is stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def bench_environment(work: Path, **extra: str) -> dict[str, str]:
    """What `lynx up` gives its services (the built models), with this run's own tenants and budget files."""
    return {**os.environ, **models_environment(build("int4")), "LYNX_GATEWAY_TENANTS_FILE": str(work / "tenants.json"),
            "LYNX_GATEWAY_BUDGETS_FILE": str(work / "budget-decisions.json"), **extra}


def add_tenant(env: dict[str, str], name: str) -> str:
    """A new tenant in the run's tenants file; its API key."""
    return TenantRegistry(Path(env["LYNX_GATEWAY_TENANTS_FILE"])).add(name)


@dataclass
class Processes:
    """Everything a benchmark started, stopped as `lynx down` stops a run however the benchmark ends."""

    started: list[ServiceProcess] = field(default_factory=list)

    def add(self, *processes: ServiceProcess) -> None:
        self.started.extend(processes)

    def stop(self) -> None:
        started, self.started = self.started, []
        stop_processes(started)


@contextmanager
def running() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop()


@dataclass(frozen=True)
class Deployment:
    """The four services as separate processes, as `lynx up` runs them, and whatever runs beside them."""

    services: dict[str, ServiceProcess]
    observability: dict[str, ServiceProcess]
    key: str
    collector_metrics_url: str | None = None  # the collector's own Prometheus metrics (spans received and sent)
    otlp_endpoint: str | None = None  # where the services export their spans (OTEL_EXPORTER_OTLP_ENDPOINT)

    @property
    def gateway_url(self) -> str:
        return self.services["gateway"].url

    def pids(self) -> dict[str, int]:
        return {name: p.process.pid for name, p in {**self.services, **self.observability}.items()}


def start_gateway(processes: Processes, env: dict[str, str], leaves: dict[str, ServiceProcess],
                  log: Path) -> ServiceProcess:
    """A gateway pointed at ``leaves``; not waited for."""
    gateway_env = {**env, **upstreams_environment({name: s.url for name, s in leaves.items()})}
    gateway = start_service("gateway", gateway_env, log)
    processes.add(gateway)
    return gateway


def start_services(processes: Processes, env: dict[str, str], log_dir: Path) -> dict[str, ServiceProcess]:
    """The three leaves, then a gateway pointed at them; not waited for."""
    log_dir.mkdir(parents=True, exist_ok=True)
    leaves = {name: start_service(name, env, log_dir / f"{name}.log") for name in LEAVES}
    processes.add(*leaves.values())
    return {**leaves, "gateway": start_gateway(processes, env, leaves, log_dir / "gateway.log")}


def start_decoder(models: Path, log: Path, threads: int, **settings: str) -> ServiceProcess:
    """A decoder alone on ``models`` (`lynx models build`'s folder), quiet and untraced, with
    LYNX_DECODER_<SETTING> for each of ``settings``; ready."""
    env = {**os.environ, **models_environment(models), "LYNX_DECODER_THREADS": str(threads),
           "LYNX_DECODER_LOG_LEVEL": "WARNING", "OTEL_TRACES_EXPORTER": "none",
           **{f"LYNX_DECODER_{name.upper()}": value for name, value in settings.items()}}
    service = start_service("decoder", env, log)
    wait_ready([service], 120)
    return service


def required_binary(name: str) -> Path:
    binary = find_binary(name)
    if binary is None:
        raise SystemExit(f"`{name}` not found in ~/.cache/lynx-tools/bin: scripts/build_tools.sh builds it")
    return binary


def start_observed(processes: Processes, env: dict[str, str], work: Path) -> Deployment:
    """`lynx up`'s configuration on free ports: spans to an OpenTelemetry Collector forwarding to Jaeger, and a
    Prometheus scraping the four services at config/prometheus.yml's interval."""
    jaeger, jaeger_ports = start_jaeger(required_binary("jaeger"), load_config("jaeger.yaml"), work / "jaeger")
    processes.add(jaeger)
    collector, collector_ports = start_collector(required_binary("otelcol-lynx"), load_config("otelcol.yaml"),
                                                 work / "otelcol", jaeger_ports.otlp_url)
    processes.add(collector)
    otlp_endpoint = f"http://127.0.0.1:{collector_ports.otlp_http}"
    exporting = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint}
    services = start_services(processes, exporting, work / "services")
    targets = {name: s.url.removeprefix("http://") for name, s in services.items()}
    prometheus = start_prometheus(required_binary("prometheus"), prometheus_config(load_config("prometheus.yml"),
                                                                                   targets), work / "prometheus")
    processes.add(prometheus)
    observability = {"jaeger": jaeger, "otelcol": collector, "prometheus": prometheus}
    wait_ready([*observability.values(), *services.values()], START_TIMEOUT_SECONDS)
    return Deployment(services, observability, add_tenant(env, f"bench-{work.name}"),
                      f"http://127.0.0.1:{collector_ports.metrics}/metrics", otlp_endpoint)


def start_plain(processes: Processes, env: dict[str, str], work: Path) -> Deployment:
    """The four services alone, with ``env`` as given (nothing exported unless it says so)."""
    services = start_services(processes, env, work / "services")
    wait_ready(list(services.values()), START_TIMEOUT_SECONDS)
    return Deployment(services, {}, add_tenant(env, f"bench-{work.name}"))


def load_spec(url: str, key: str, concurrency: int, seconds: float | None = None, requests: int | None = None,
              stream_share: float = 0.5) -> LoadSpec:
    """The benchmarks' request: `lynx load`'s chat completion (retrieval on, the gateway's default) of MAX_TOKENS."""
    return LoadSpec(base_url=url, keys=(key,), concurrency=concurrency, duration_s=seconds, requests=requests,
                    max_tokens=MAX_TOKENS, stream_share=stream_share, timeout_s=REQUEST_TIMEOUT_SECONDS)


def histogram_totals(url: str, name: str, label: str) -> dict[str, tuple[float, float]]:
    """{value of ``label``: (sum, count)} of a histogram a service exports on its /metrics."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            key = sample.labels.get(label, "")
            if sample.name == f"{name}_sum":
                sums[key] = sums.get(key, 0.0) + sample.value
            elif sample.name == f"{name}_count":
                counts[key] = counts.get(key, 0.0) + sample.value
    return {key: (sums[key], counts.get(key, 0.0)) for key in sums}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Saturation:
    """One closed-loop run: `lynx load`'s figures, the throughput while every client was busy, the CPU seconds each
    watched process spent during the run, and how many answers named their trace (the x-lynx-trace-id header)."""

    report: LoadReport
    requests_per_s: float
    tokens_per_s: float
    cpu: dict[str, float]
    traced: int

    def cpu_per_request_ms(self) -> dict[str, float]:
        return {name: seconds * 1000 / max(self.report.ok, 1) for name, seconds in self.cpu.items()}


def steady_throughput(records: list[RequestRecord], stopped_sending: float) -> tuple[float, float]:
    """(requests/s, output tokens/s) of the answers that ended between the run's first answer and the moment it
    stopped sending (unix time): all its clients were busy throughout, neither filling the pipeline nor draining it."""
    first = min(r.finished_at for r in records)
    ended = [r for r in records if r.ok and first < r.finished_at <= stopped_sending]
    seconds = stopped_sending - first
    if seconds <= 0 or not ended:
        raise SystemExit("no answer ended while the run was sending: make the run longer")
    return len(ended) / seconds, sum(r.completion_tokens or 0 for r in ended) / seconds


def saturate(spec: LoadSpec, pids: dict[str, int]) -> Saturation:
    """Drives ``spec`` (a fixed concurrency for a fixed time; requests under way then finish) and measures it."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started, started_at = time.perf_counter(), time.time()
    records = asyncio.run(drive(spec))
    elapsed = time.perf_counter() - started
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    requests_per_s, tokens_per_s = steady_throughput(records, started_at + (spec.duration_s or elapsed))
    return Saturation(summarize(records, elapsed), requests_per_s, tokens_per_s, spent,
                      sum(1 for r in records if r.trace_id))


def arrival_offsets(rate: float, seconds: float, seed: int) -> list[float]:
    """Seconds after the start at which each request is sent: a Poisson process of ``rate`` per second."""
    rng = random.Random(seed)
    offsets, at = [], rng.expovariate(rate)
    while at < seconds:
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


async def at_offsets(client: httpx.AsyncClient, spec: LoadSpec, model: str, offsets: list[float],
                     started: float) -> list[RequestRecord]:
    """Sends request i at ``started + offsets[i]`` (monotonic), whatever is still under way; their records."""
    async def one(index: int, offset: float) -> RequestRecord:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
        return await send(client, spec, model, index)

    return list(await asyncio.gather(*(one(i, offset) for i, offset in enumerate(offsets))))


def warm_up(url: str, key: str) -> None:
    """A few requests through every stage, so that no measured run pays for first calls."""
    report = saturate(load_spec(url, key, concurrency=2, requests=4), {}).report
    if report.ok < report.requests:
        raise SystemExit(f"warm-up through {url} failed: {report.errors}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores"


def load_average() -> float:
    return os.getloadavg()[0]


def model_name() -> str:
    return GatewaySettings().model_name


def command_line(script: str, argv: list[str]) -> str:
    """The command that produced a section, as one would type it from the repository's root."""
    return shlex.join([".venv/bin/python", f"scripts/{script}", *argv])


def measure_and_publish(script: str, args: argparse.Namespace, heading: str,
                        measure: Callable[[argparse.Namespace], dict],
                        render: Callable[[argparse.Namespace, dict], str]) -> None:
    """A benchmark's run: ``measure``, then its section (``render``, which finds the command line in
    ``args.command``) printed, and written into ``args.output`` when one is given. SIGTERM stops what it started."""
    args.command = command_line(script, sys.argv[1:])
    stop_on_sigterm()
    section = render(args, measure(args))
    print(section, flush=True)
    if args.output:
        write_section(args.output, heading, section)


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next level-2 heading) in ``path``, or append it."""
    text = path.read_text() if path.exists() else ""
    start = text.find(heading + "\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = text.find("\n## ", start + len(heading))
    rest = text[end + 1:] if end >= 0 else ""
    path.write_text(text[:start] + section + ("\n" + rest if rest else ""))
