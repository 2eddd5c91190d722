"""`lynx up` and `lynx down`: the services, the budget loop and the observability stack as local processes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lynx.local.processes import start_service, stop_groups, wait_ready
from lynx.local.stopping import stop_phases
from lynx.local.topology import (
    SERVICES, UPSTREAMS, Topology, auditor_environment, models_environment, upstreams_environment,
)
from lynx.settings import default_cache_dir
from lynx.telemetry.prometheus_api import query_link

DEMO_DAILY_CAP_EUR = 1.0  # `lynx up`'s tenant: thousands of requests a day on this machine's rates
READY_TIMEOUT_SECONDS = 300


def run_dir() -> Path:
    return default_cache_dir() / "run"


def start_observability(topology: Topology, env: dict[str, str]) -> tuple[list, dict[str, str], dict[str, str]]:
    """Jaeger (+ the auditor, + the collector the services export to, which sends on to Jaeger) and Prometheus when
    their binaries exist; says what it skipped and why. Returns the processes, the services' environment, and
    what a person can open: name -> URL."""
    from lynx.gateway.settings import GatewaySettings
    from lynx.local.stack import (
        find_binary, load_config, prometheus_config, start_collector, start_jaeger, start_prometheus,
    )

    started, service_env, urls = [], {}, {}
    jaeger_binary = find_binary("jaeger")
    if jaeger_binary:
        jaeger, ports = start_jaeger(jaeger_binary, load_config("jaeger.yaml"), run_dir() / "jaeger", topology.jaeger,
                                     detached=True)
        started.append(jaeger)
        urls["jaeger"] = f"{ports.query_url}/api/v3/services (traces: /api/v3/traces/<trace id>)"
        otlp = ports.otlp_url
        collector_binary = find_binary("otelcol-lynx")
        if collector_binary:
            collector, collector_ports = start_collector(
                collector_binary, load_config("otelcol.yaml"), run_dir() / "otelcol", otlp, topology.collector,
                detached=True)
            started.append(collector)
            otlp = collector_ports.otlp_url
        else:
            print("skipped the OpenTelemetry Collector: no `otelcol-lynx` in ~/.cache/lynx-tools/bin "
                  "(scripts/build_tools.sh otelcol builds it); spans go straight to Jaeger and are lost while it is "
                  "down", file=sys.stderr)
        service_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
        auditor = start_service("auditor", {**env, **auditor_environment(
            ports.query_url, GatewaySettings().request_deadline_seconds)}, run_dir() / "auditor.log",
            port=topology.services["auditor"], detached=True)
        started.append(auditor)
        urls["auditor"] = f"{auditor.url}/metrics (orphan spans: POST {auditor.url}/v1/audit)"
    else:
        print("skipped Jaeger and the trace auditor: no `jaeger` in ~/.cache/lynx-tools/bin "
              "(scripts/build_tools.sh jaeger builds it); spans are not exported", file=sys.stderr)
    prometheus_binary = find_binary("prometheus")
    if prometheus_binary:
        prometheus = start_prometheus(prometheus_binary, prometheus_config(load_config("prometheus.yml"),
                                                                           topology.scrape_targets()),
                                      run_dir() / "prometheus", port=topology.prometheus, detached=True)
        started.append(prometheus)
        urls["prometheus"] = f"{query_link(prometheus.url, 'lynx_tenant_cost_eur_total')} (API only: no UI)"
    else:
        print("skipped Prometheus: no `prometheus` in ~/.cache/lynx-tools/bin (scripts/build_tools.sh prometheus "
              "builds it)", file=sys.stderr)
    return started, service_env, urls


def up(args) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenant_keys import LocalTenants
    from lynx.models.cache import build, models_dir
    from lynx_budget.local import budget_or_default, local_store

    build(args.precision)
    ensure_index()
    down(quiet=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    # Before the budget loop starts: its first decisions, published before the gateway is ready, include it.
    budget = budget_or_default(local_store(), args.tenant, args.daily_cap)
    topology = Topology.configured()
    env = {**os.environ, **models_environment(models_dir(args.precision))}
    observability, service_env, urls = start_observability(topology, env) if args.observability else ([], {}, {})
    services = [start_service(name, {**env, **service_env, **(upstreams_environment(
        {upstream: topology.url(upstream) for upstream in UPSTREAMS}) if name == "gateway" else {})},
        run_dir() / f"{name}.log", port=topology.services[name], detached=True) for name in SERVICES]
    settings = GatewaySettings()
    # The budget loop publishes its decisions where this gateway reads them.
    budgets = start_service("budgets", {**env, "LYNX_BUDGETS_DECISIONS_FILE": str(settings.budgets_file),
                                        "LYNX_BUDGETS_PROMETHEUS_URL": topology.prometheus_url},
                            run_dir() / "budgets.log", port=topology.services["budgets"], detached=True)
    everything = [*observability, *services, budgets]
    (run_dir() / "pids.json").write_text(json.dumps({p.name: p.process.pid for p in everything}))
    base = topology.url("gateway")
    try:
        wait_ready(everything, READY_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise SystemExit(f"{error}\nlogs are in {run_dir()}") from None
    key = LocalTenants(settings.tenants_file).key_or_new(args.tenant)
    print(f"lynx is ready on {base} (logs: {run_dir()}; stop with: lynx down)")
    for process in [*observability, budgets]:
        print(f"  {process.name}: {urls.get(process.name, process.url)}")
    print(f"tenant '{args.tenant}' API key: {key} (the same at every `lynx up`: `lynx tenant rotate {args.tenant}` "
          "replaces it)")
    print(f"tenant '{args.tenant}' daily budget: {budget.daily_cap_eur:g} EUR ({budget.timezone} days; `lynx budget why "
          f"{args.tenant}` explains its state)")
    print("try:")
    body = json.dumps({"model": settings.model_name, "temperature": 0, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
    print(f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
          f"-H 'Content-Type: application/json' -d '{body}'")


def down(args=None, quiet: bool = False) -> None:
    """Stops what `lynx up` started and returns only once every process of it has exited (so its ports are free)."""
    pids_file = run_dir() / "pids.json"
    if not pids_file.exists():
        return
    pids_by_name = json.loads(pids_file.read_text())
    names = {pid: name for name, pid in pids_by_name.items()}
    try:
        for pids, grace in stop_phases(pids_by_name.items()):
            for pid, ending in stop_groups(pids, grace):
                if ending == "killed":
                    print(f"killed {names[pid]} (pid {pid}) with SIGKILL: still running {grace} s after SIGTERM",
                          file=sys.stderr)
                elif not quiet:
                    print(f"stopped {names[pid]} (pid {pid})" if ending == "stopped"
                          else f"{names[pid]} (pid {pid}) was not running")
    except RuntimeError as error:  # pids.json stays, so that the next `lynx down` tries again
        raise SystemExit(f"lynx down: {error}") from None
    pids_file.unlink()


def ensure_index(corpus: Path | None = None, force: bool = False) -> None:
    from lynx.models.cache import models_dir
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


