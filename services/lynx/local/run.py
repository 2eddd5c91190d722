"""`lynx up` and `lynx down`: the services, the budget loop and the observability stack as local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lynx.local.builds import BUILDER, piece_states, start_builder
from lynx.local.observability import PIECES, missing, piece_urls, spans_endpoint, start_piece
from lynx.local.processes import ServiceProcess, start_service, stop_groups, wait_ready
from lynx.local.registry import forget, pids_file, record, recorded_pids, run_dir
from lynx.local.stopping import stop_phases
from lynx.local.topology import (
    SERVICES, UPSTREAMS, Topology, lease_environment, models_environment, upstreams_environment, usage_environment,
)
from lynx.service.polling import poll

if TYPE_CHECKING:
    from lynx.contracts.budgets import BudgetSpec

DEMO_DAILY_CAP_EUR = 1.0  # `lynx up`'s tenant: thousands of requests a day on this machine's rates
READY_TIMEOUT_SECONDS = 300
BUILDER_GRACE_SECONDS = 10
# A first build of the collector: module downloads and about 90 s of compiling on 2 cores, beside the models' build.
COLLECTOR_BUILD_TIMEOUT_SECONDS = 900


def await_collector(topology: Topology, builder: subprocess.Popen) -> bool:
    """Whether the collector the builder builds first came up (False: its build failed, or the builder stopped)."""
    import httpx

    def settled() -> str | None:
        try:
            if httpx.get(f"http://{topology.host}:{topology.collector.health}/", timeout=2).is_success:
                return "up"
        except httpx.HTTPError:
            pass
        return "gone" if piece_states().get("otelcol") == "failed" or builder.poll() is not None else None

    print(f"waiting for the OpenTelemetry Collector's first build (log: {run_dir() / 'builds.log'}): the services "
          "start once it runs, so that it holds their spans until Jaeger is built", file=sys.stderr)
    outcome = poll(settled, COLLECTOR_BUILD_TIMEOUT_SECONDS, interval=1)
    if outcome is None:
        print(f"the collector's first build took more than {COLLECTOR_BUILD_TIMEOUT_SECONDS} s: the services start "
              "without it", file=sys.stderr)
    return outcome == "up"


def up(args) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenant_keys import LocalTenants
    from lynx.service.files import shared_token
    from lynx.tools.models.cache import build
    from lynx_budget.console.settings import ConsoleSettings
    from lynx_budget.local import LocalBudgetSettings, budget_or_default, local_store

    since = time.time()
    down(quiet=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    topology, settings = Topology.configured(), GatewaySettings()
    # A first run builds what is missing of the observability stack while the models build, and serves before
    # Prometheus and Jaeger are built: spans wait in the collector, the gateway's counters until the first scrape.
    pending = missing() if args.observability else []
    builder = start_builder(pending, since) if pending else None
    if builder:
        print(f"building {', '.join(pending)} for the first time, in the background (log: {run_dir() / 'builds.log'})",
              file=sys.stderr)
    env = {**os.environ, **models_environment(build(args.precision))}
    ensure_index()
    # Before the budget loop starts: its first decisions, published before the gateway is ready, include it.
    budget = budget_or_default(local_store(), args.tenant, args.daily_cap)
    built = [piece for piece in PIECES if piece not in pending] if args.observability else []
    observability = [process for piece in built
                     for process in start_piece(piece, topology, run_dir(), env, settings.request_deadline_seconds)]
    record({process.name: process.process.pid for process in observability})
    coming = set(pending)
    if builder and "otelcol" in pending and not await_collector(topology, builder):
        coming.discard("otelcol")
        print("without the collector: spans go straight to Jaeger and are lost while it is down "
              "(scripts/build_tools.sh otelcol builds it)", file=sys.stderr)
    endpoint = spans_endpoint(topology, coming | set(built))
    service_env = {**env, **({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if endpoint else {})}
    # The gateway admits budgeted tenants within the spend leases the budget loop grants it.
    gateway_env = {**upstreams_environment({name: topology.url(name) for name in UPSTREAMS}),
                 **lease_environment(topology.url("budgets"), LocalBudgetSettings().lease_token_file),
                 **usage_environment(topology.prometheus_url)}
    services = [start_service(name, {**service_env, **(gateway_env if name == "gateway" else {})},
                              run_dir() / f"{name}.log", port=topology.services[name], detached=True)
                for name in SERVICES]
    # The budget loop publishes its decisions where this gateway reads them.
    budgets = start_service("budgets", {**env, "LYNX_BUDGETS_DECISIONS_FILE": str(settings.budgets_file),
                                        "LYNX_BUDGETS_PROMETHEUS_URL": topology.prometheus_url,
                                        "LYNX_CONSOLE_TENANTS_FILE": str(settings.tenants_file),
                                        "LYNX_CONSOLE_TRACE_STORE_URL": topology.jaeger.query_url},
                            run_dir() / "budgets.log", port=topology.services["budgets"], detached=True)
    record({process.name: process.process.pid for process in [*services, budgets]})
    try:
        wait_ready([*observability, *services, budgets], READY_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise SystemExit(f"{error}\nlogs are in {run_dir()}") from None
    states = {**dict.fromkeys(PIECES, "ready"), **(piece_states() if builder else {})} if args.observability else {}
    say_ready(topology, states, budgets, args.tenant, LocalTenants(settings.tenants_file).key_or_new(args.tenant),
              budget, settings.model_name, shared_token(ConsoleSettings().admin_token_file))


def say_ready(topology: Topology, states: dict[str, str], budgets: ServiceProcess, tenant: str, key: str,
              budget: BudgetSpec, model: str, console_token: str) -> None:
    """What runs, what is still building, the tenant's key and budget, and a request to try."""
    base = topology.url("gateway")
    print(f"lynx is ready on {base} (logs: {run_dir()}; stop with: lynx down)")
    for piece, state in states.items():
        for name, url in piece_urls(piece, topology).items():
            print(f"  {name}: {url}" + ("" if state == "ready" else f" ({state})"))
    print(f"  budgets: {budgets.url}")
    print(f"  console: {budgets.url}/console/ (admin token: {console_token}; or sign in with a tenant's API key)")
    if building := [piece for piece, state in states.items() if state == "building"]:
        print(f"  still building: {', '.join(building)} (each starts once built; {run_dir() / 'builds.log'} ends with "
              "\"the observability stack is up\"). Meanwhile the collector holds the spans and the gateway's counters "
              "wait for Prometheus' first scrape: no charge or span is lost, and budgets are enforced once Prometheus "
              "answers")
    print(f"tenant '{tenant}' API key: {key} (the same at every `lynx up`: `lynx tenant rotate {tenant}` replaces it)")
    print(f"tenant '{tenant}' daily budget: {budget.daily_cap_eur:g} EUR ({budget.timezone} days; `lynx budget why "
          f"{tenant}` explains its state)")
    print("try:")
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
    print(f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
          f"-H 'Content-Type: application/json' -d '{body}'")


def stop(pids_by_name: dict[str, int], grace: float | None, quiet: bool) -> None:
    """Stops the recorded processes ``pids_by_name``: phase by phase (lynx.local.stopping), or all with ``grace``."""
    names = {pid: name for name, pid in pids_by_name.items()}
    phases = stop_phases(pids_by_name.items()) if grace is None else [(list(pids_by_name.values()), grace)]
    for pids, phase_grace in phases:
        for pid, ending in stop_groups(pids, phase_grace):
            if ending == "killed":
                print(f"killed {names[pid]} (pid {pid}) with SIGKILL: still running {phase_grace} s after SIGTERM",
                      file=sys.stderr)
            elif not quiet:
                print(f"stopped {names[pid]} (pid {pid})" if ending == "stopped"
                      else f"{names[pid]} (pid {pid}) was not running")


def down(args=None, quiet: bool = False) -> None:
    """Stops what `lynx up` started and returns only once every process of it has exited (so its ports are free).
    A builder still at work goes first (with its builds), so that it starts nothing more."""
    try:
        builder = recorded_pids().get(BUILDER)
        if builder:
            stop({BUILDER: builder}, BUILDER_GRACE_SECONDS, quiet)
            forget([BUILDER])
        pids_by_name = recorded_pids()
        if not pids_by_name:
            return
        stop(pids_by_name, None, quiet)
    except RuntimeError as error:  # the record stays, so that the next `lynx down` tries again
        raise SystemExit(f"lynx down: {error}") from None
    pids_file().unlink(missing_ok=True)


def ensure_index(corpus: Path | None = None, force: bool = False) -> None:
    from lynx.tools.models.cache import models_dir
    from lynx.retriever.index import INDEX_FILE, read_manifest
    from lynx.retriever.ingest import DEFAULT_CORPUS, current_chunking, ingest
    from lynx.retriever.settings import RetrieverSettings

    settings = RetrieverSettings()
    if (settings.index_dir / INDEX_FILE).is_file() and not force:
        if read_manifest(settings.index_dir).get("chunking") == current_chunking():
            return
        corpus = corpus or Path(read_manifest(settings.index_dir)["corpus"])
    corpus = corpus or DEFAULT_CORPUS
    if not corpus.is_dir():
        raise SystemExit(f"corpus {corpus} not found (the default is Debian's python3.11-doc: "
                         "apt-get install python3.11-doc, or pass a folder to `lynx ingest`)")
    summary = ingest(corpus, settings.index_dir, models_dir() / "embedder")
    print(json.dumps(summary), file=sys.stderr)


