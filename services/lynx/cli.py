"""lynx's command line: serve one service, run them all locally, build models, ingest documents, set budgets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lynx.chaos.cli import add_chaos_command
from lynx.load.cli import add_load_command
from lynx.processes import ServiceProcess, start_service, stop_groups, stop_together, wait_ready
from lynx.settings import default_cache_dir

if TYPE_CHECKING:
    from lynx.contracts.budgets import BudgetSpec
    from lynx_budget.local import BudgetStore

SERVICES = ("tokenizer", "retriever", "decoder", "gateway")
SERVEABLE = (*SERVICES, "auditor", "budgets")
# Where a serveable's create_app lives when it is not lynx.<name>.app.
APP_MODULES = {"budgets": "lynx_budget.local"}
READY_TIMEOUT_SECONDS = 300
T = TypeVar("T")
# Above the services' own shutdown at its longest (lynx.shutdown, default settings: the 15 s drain and the 20 s
# final-scrape wait share 35 s, then up to 5 s to close).
STOP_GRACE_SECONDS = 45
# Stopped after the services (everything Prometheus scrapes: the budget loop and the auditor too), in this order,
# each phase with its own grace: Prometheus once the stopping processes have had their last scrape (lynx.shutdown
# waits for one, and would wait its whole stop for a Prometheus stopping beside it); the collector once the services
# have flushed their spans to it (it sends what it holds on its way out); Jaeger last, once the collector has
# handed it what it held (it writes them to badger and closes its files on SIGTERM).
LATER_PHASES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("prometheus",), STOP_GRACE_SECONDS), (("otelcol",), 10), (("jaeger",), 10))


def stop_grace(name: str) -> float:
    """Seconds between SIGTERM and SIGKILL for the process `lynx up` named ``name``."""
    return next((grace for names, grace in LATER_PHASES if name in names), STOP_GRACE_SECONDS)


def stop_phases(named: Iterable[tuple[str, T]]) -> list[tuple[list[T], float]]:
    """The processes of a run (``(name, pid or process)`` pairs), in the order they are stopped: phases whose
    processes stop together, each with its grace."""
    named = list(named)
    later = {name for names, _ in LATER_PHASES for name in names}
    return [([item for name, item in named if name not in later], STOP_GRACE_SECONDS),
            *(([item for name, item in named if name in names], grace) for names, grace in LATER_PHASES)]


def stop_processes(processes: Iterable[ServiceProcess]) -> None:
    """Stops processes started in this one (tests, benchmarks) as `lynx down` stops a run: phase by phase
    (``stop_phases``), each phase's processes together."""
    for phase, grace in stop_phases((process.name, process) for process in processes):
        stop_together(phase, grace)


def app_factory(service: str):
    """The service's create_app, imported only when that service is the one asked for."""
    module = __import__(APP_MODULES.get(service, f"lynx.{service}.app"), fromlist=["create_app"])
    return module.create_app


def serve(args: argparse.Namespace) -> None:
    from lynx.shutdown import serve as serve_app

    serve_app(app_factory(args.service)())


def run_dir() -> Path:
    return default_cache_dir() / "run"


def configured_port(service: str) -> int:
    """The port the service's settings give (LYNX_<SERVICE>_PORT or its default)."""
    from lynx.auditor.settings import AuditorSettings
    from lynx.decoder.settings import DecoderSettings
    from lynx.gateway.settings import GatewaySettings
    from lynx.retriever.settings import RetrieverSettings
    from lynx.tokenizer.settings import TokenizerSettings
    from lynx_budget.local import LocalBudgetSettings

    settings = {"tokenizer": TokenizerSettings, "retriever": RetrieverSettings, "decoder": DecoderSettings,
                "gateway": GatewaySettings, "auditor": AuditorSettings, "budgets": LocalBudgetSettings}[service]
    return settings().port


def service_environment(precision: str) -> dict[str, str]:
    from lynx.models.cache import models_dir

    models = models_dir(precision)
    return {
        **os.environ,
        "LYNX_TOKENIZER_MODEL_DIR": str(models / "decoder"),
        "LYNX_DECODER_MODEL_DIR": str(models / "decoder"),
        "LYNX_RETRIEVER_EMBEDDER_DIR": str(models / "embedder"),
    }


# `lynx up`'s trace store: the query API on Jaeger's usual 16686, the OTLP receiver the collector sends to on 4319
# (the collector has 4318), and beside them ports no other process of the stack uses.
LOCAL_JAEGER_PORTS = dict(query_http=16686, query_grpc=16685, otlp_http=4319, health=13134, metrics=8889)


def start_observability(env: dict[str, str]) -> tuple[list, dict[str, str], dict[str, str]]:
    """Jaeger (+ the auditor, + the collector the services export to, which sends on to Jaeger) and Prometheus when
    their binaries exist; says what it skipped and why. Returns the processes, the services' environment, and
    what a person can open: name -> URL."""
    from lynx.gateway.settings import GatewaySettings
    from lynx.stack import (
        CollectorPorts, JaegerPorts, find_binary, load_config, prometheus_config, start_collector, start_jaeger,
        start_prometheus,
    )

    started, service_env, urls = [], {}, {}
    jaeger_binary = find_binary("jaeger")
    if jaeger_binary:
        jaeger, ports = start_jaeger(jaeger_binary, load_config("jaeger.yaml"), run_dir() / "jaeger",
                                     JaegerPorts(**LOCAL_JAEGER_PORTS), detached=True)
        started.append(jaeger)
        urls["jaeger"] = f"{ports.query_url}/api/v3/services (traces: /api/v3/traces/<trace id>)"
        otlp = ports.otlp_url
        collector_binary = find_binary("otelcol-lynx")
        if collector_binary:
            collector, collector_ports = start_collector(
                collector_binary, load_config("otelcol.yaml"), run_dir() / "otelcol", otlp,
                CollectorPorts(otlp_http=4318, health=13133, metrics=8888), detached=True)
            started.append(collector)
            otlp = f"http://127.0.0.1:{collector_ports.otlp_http}"
        else:
            print("skipped the OpenTelemetry Collector: no `otelcol-lynx` in ~/.cache/lynx-tools/bin "
                  "(scripts/build_tools.sh otelcol builds it); spans go straight to Jaeger and are lost while it is "
                  "down", file=sys.stderr)
        service_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
        # The auditor waits out the gateway's deadline before it calls a missing parent lost.
        auditor = start_service("auditor", {**env, "LYNX_AUDITOR_TRACE_STORE_URL": ports.query_url,
                                            "LYNX_AUDITOR_TRACE_STORE_KIND": "jaeger",
                                            "LYNX_AUDITOR_REQUEST_DEADLINE_SECONDS":
                                                str(GatewaySettings().request_deadline_seconds)},
                                run_dir() / "auditor.log", port=configured_port("auditor"), detached=True)
        started.append(auditor)
        urls["auditor"] = f"{auditor.url}/metrics (orphan spans: POST {auditor.url}/v1/audit)"
    else:
        print("skipped Jaeger and the trace auditor: no `jaeger` in ~/.cache/lynx-tools/bin "
              "(scripts/build_tools.sh jaeger builds it); spans are not exported", file=sys.stderr)
    prometheus_binary = find_binary("prometheus")
    if prometheus_binary:
        targets = {name: f"127.0.0.1:{configured_port(name)}" for name in SERVEABLE}
        prometheus = start_prometheus(prometheus_binary, prometheus_config(load_config("prometheus.yml"), targets),
                                      run_dir() / "prometheus", port=9090, detached=True)
        started.append(prometheus)
        urls["prometheus"] = f"{prometheus.url}/api/v1/query?query=lynx_tenant_cost_eur_total (API only: no UI)"
    else:
        print("skipped Prometheus: no `prometheus` in ~/.cache/lynx-tools/bin (scripts/build_tools.sh prometheus "
              "builds it)", file=sys.stderr)
    return started, service_env, urls


def up(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenants import TenantRegistry
    from lynx.models.cache import build

    build(args.precision)
    ensure_index()
    down(args, quiet=True)
    run_dir().mkdir(parents=True, exist_ok=True)
    env = service_environment(args.precision)
    observability, service_env, urls = start_observability(env) if args.observability else ([], {}, {})
    services = [start_service(name, {**env, **service_env}, run_dir() / f"{name}.log", port=configured_port(name),
                              detached=True) for name in SERVICES]
    settings = GatewaySettings()
    # The budget loop publishes its decisions where this gateway reads them.
    budgets = start_service("budgets", {**env, "LYNX_BUDGETS_DECISIONS_FILE": str(settings.budgets_file)},
                            run_dir() / "budgets.log", port=configured_port("budgets"), detached=True)
    everything = [*observability, *services, budgets]
    (run_dir() / "pids.json").write_text(json.dumps({p.name: p.process.pid for p in everything}))
    base = f"http://{settings.host}:{settings.port}"
    try:
        wait_ready(everything, READY_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise SystemExit(f"{error}\nlogs are in {run_dir()}") from None
    key = TenantRegistry(settings.tenants_file).add(args.tenant)
    print(f"lynx is ready on {base} (logs: {run_dir()}; stop with: lynx down)")
    for process in [*observability, budgets]:
        print(f"  {process.name}: {urls.get(process.name, process.url)}")
    print(f"tenant '{args.tenant}' API key: {key}")
    print("try:")
    body = json.dumps({"model": settings.model_name, "temperature": 0, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
    print(f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
          f"-H 'Content-Type: application/json' -d '{body}'")


def down(args: argparse.Namespace, quiet: bool = False) -> None:
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


def models_build(args: argparse.Namespace) -> None:
    from lynx.models.cache import build

    print(build(args.precision, force=args.force))


def tenant_add(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenants import TenantRegistry

    print(TenantRegistry(GatewaySettings().tenants_file).add(args.tenant))


def budget_store(args: argparse.Namespace) -> BudgetStore:
    """The budgets this command line edits: the embedded default's local file (`lynx up`), or with --kube the
    TenantBudget resources of the current kubeconfig context."""
    if args.kube:
        from lynx_budget.kubestore import KubeStore

        return KubeStore(args.namespace)
    from lynx_budget.local import FileStore, LocalBudgetSettings

    settings = LocalBudgetSettings()
    return FileStore(settings.budgets_file, settings.state_file)


def existing_budget(store: BudgetStore, tenant: str) -> BudgetSpec:
    spec = store.get(tenant)
    if spec is None:
        raise SystemExit(f"tenant {tenant!r} has no budget; set one with: lynx budget set {tenant} --cap EUR")
    return spec


def save_budget(store: BudgetStore, spec: BudgetSpec) -> None:
    store.put(spec)
    print(f"budget of {spec.tenant} saved; the budget controller applies it at its next run")


def budget_set(args: argparse.Namespace) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from pydantic import ValidationError

    from lynx.contracts.budgets import BudgetSpec

    store = budget_store(args)
    current = store.get(args.tenant)
    if current is None and args.cap is None:
        raise SystemExit(f"tenant {args.tenant!r} has no budget yet: --cap is required")
    changes = {"daily_cap_eur": args.cap, "timezone": args.timezone, "warning_percent": args.warning,
               "per_request_cap_eur": args.per_request_cap, "cheaper_near_cap": args.cheaper_near_cap}
    base = current.model_dump() if current else {"tenant": args.tenant}
    try:
        if args.timezone is not None:
            ZoneInfo(args.timezone)
        spec = BudgetSpec.model_validate({**base, **{k: v for k, v in changes.items() if v is not None}})
    except (ValidationError, ZoneInfoNotFoundError, ValueError) as error:
        raise SystemExit(f"lynx budget set: {error}") from None
    save_budget(store, spec)


def budget_pause(args: argparse.Namespace) -> None:
    from lynx_budget.admin import pause, resume

    store = budget_store(args)
    change = pause if args.action == "pause" else resume
    save_budget(store, change(existing_budget(store, args.tenant)))


def budget_raise(args: argparse.Namespace) -> None:
    import getpass

    from lynx_budget.admin import add_raise

    store = budget_store(args)
    try:
        spec = add_raise(existing_budget(store, args.tenant), args.amount, args.hours, args.reason,
                         args.requested_by or getpass.getuser(), datetime.now(UTC))
    except ValueError as error:
        raise SystemExit(f"lynx budget raise: {error}") from None
    save_budget(store, spec)


def budget_why(args: argparse.Namespace) -> None:
    from lynx_budget.admin import explain

    store = budget_store(args)
    print(explain(existing_budget(store, args.tenant), store.status(args.tenant), datetime.now(UTC)))


def budget_export(args: argparse.Namespace) -> None:
    from lynx_budget.admin import spend_csv

    store = budget_store(args)
    sys.stdout.write(spend_csv([(spec, store.status(spec.tenant)) for spec in store.list()]))


def dashboards_build(args: argparse.Namespace) -> None:
    from lynx.dashboards.build import DASHBOARDS_DIR, write

    for path in write(args.out or DASHBOARDS_DIR):
        print(path)


def cpqu(args: argparse.Namespace) -> None:
    from lynx.dashboards.build import COSTS_DOC, CPQU_END, CPQU_START, write
    from lynx.gateway.settings import GatewaySettings
    from lynx.quality.cpqu import run, update_document

    row = run(args.gateway, args.prometheus, args.key, args.tenant, GatewaySettings().model_name)
    document = args.doc or COSTS_DOC
    document.write_text(update_document(document.read_text(), row, CPQU_START, CPQU_END))
    print(json.dumps({"week": row.week, "questions": row.questions, "correct": row.correct,
                      "cost_eur": row.cost_eur, "cpqu_eur": row.cpqu}))
    if args.doc is None:  # the dashboard's CpQU panel copies the table
        write()


def add_budget_commands(commands) -> None:
    budget_cmd = commands.add_parser(
        "budget", help="per-tenant daily cost caps: the local budgets file (`lynx up`) or TenantBudgets").add_subparsers(
        dest="action", required=True)
    set_cmd = budget_cmd.add_parser("set", help="create or change a tenant's budget")
    set_cmd.add_argument("tenant")
    set_cmd.add_argument("--cap", type=float, help="daily cap in EUR (required for a new budget)")
    set_cmd.add_argument("--timezone", help="IANA zone whose midnight resets the day (default UTC)")
    set_cmd.add_argument("--warning", type=float, help="warning threshold, percent of the cap (default 80)")
    set_cmd.add_argument("--per-request-cap", type=float, help="no single request may cost more (EUR)")
    set_cmd.add_argument("--cheaper-near-cap", action=argparse.BooleanOptionalAction, default=None,
                         help="in Warning, route to the cheaper decoder when one is deployed")
    set_cmd.set_defaults(run=budget_set)
    for action, says in (("pause", "refuse every request of the tenant"), ("resume", "lift a pause")):
        command = budget_cmd.add_parser(action, help=says)
        command.add_argument("tenant")
        command.set_defaults(run=budget_pause)
    raise_cmd = budget_cmd.add_parser("raise", help="raise a tenant's cap for a while, with a reason")
    raise_cmd.add_argument("tenant")
    raise_cmd.add_argument("--amount", type=float, required=True, help="EUR added to the daily cap")
    raise_cmd.add_argument("--hours", type=float, default=24, help="how long it lasts (at most 72; default 24)")
    raise_cmd.add_argument("--reason", required=True)
    raise_cmd.add_argument("--by", dest="requested_by", help="who asks (default: your user name)")
    raise_cmd.set_defaults(run=budget_raise)
    why_cmd = budget_cmd.add_parser("why", help="why a tenant is in its state, and what to do")
    why_cmd.add_argument("tenant")
    why_cmd.set_defaults(run=budget_why)
    budget_cmd.add_parser("export", help="today's spend by tenant, as CSV").set_defaults(run=budget_export)
    for command in budget_cmd.choices.values():
        command.add_argument("--kube", action="store_true",
                             help="act on the TenantBudget resources of the current kubeconfig context instead")
        command.add_argument("--namespace", help="with --kube: their namespace (default: the context's)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lynx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run one service in the foreground")
    serve_cmd.add_argument("service", choices=SERVEABLE)
    serve_cmd.set_defaults(run=serve)

    up_cmd = commands.add_parser("up", help="build what is missing and start all four services locally")
    up_cmd.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    up_cmd.add_argument("--tenant", default="demo")
    up_cmd.add_argument("--no-observability", dest="observability", action="store_false",
                        help="do not start Prometheus, Jaeger, the collector and the trace auditor")
    up_cmd.set_defaults(run=up)

    commands.add_parser("down", help="stop the services `lynx up` started").set_defaults(run=down)

    models_cmd = commands.add_parser("models", help="model builds").add_subparsers(dest="action", required=True)
    build_cmd = models_cmd.add_parser("build", help="convert the packaged weights to ONNX (cached)")
    build_cmd.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    build_cmd.add_argument("--force", action="store_true")
    build_cmd.set_defaults(run=models_build)

    ingest_cmd = commands.add_parser("ingest", help="index a folder of .txt/.md/.html files for retrieval")
    ingest_cmd.add_argument("corpus", type=Path, nargs="?", help="default: the Python tutorial (python3.11-doc)")
    ingest_cmd.add_argument("--if-missing", action="store_true", help="keep an existing index")
    ingest_cmd.set_defaults(run=lambda a: ensure_index(a.corpus, force=not a.if_missing))

    tenant_cmd = commands.add_parser("tenant", help="tenants").add_subparsers(dest="action", required=True)
    add_cmd = tenant_cmd.add_parser("add", help="create a tenant (or rotate its key); prints the key once")
    add_cmd.add_argument("tenant")
    add_cmd.set_defaults(run=tenant_add)

    add_budget_commands(commands)
    add_load_command(commands)
    add_chaos_command(commands)

    dashboards_cmd = commands.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="action", required=True)
    dash_build = dashboards_cmd.add_parser("build", help="write dashboards/*.json from lynx.dashboards")
    dash_build.add_argument("--out", type=Path, default=None, help="default: the repository's dashboards/")
    dash_build.set_defaults(run=dashboards_build)

    cpqu_cmd = commands.add_parser("cpqu", help="measure cost per quality unit into docs/COSTS.md")
    cpqu_cmd.add_argument("--gateway", default="http://127.0.0.1:8080")
    cpqu_cmd.add_argument("--prometheus", default="http://127.0.0.1:9090")
    cpqu_cmd.add_argument("--key", required=True, help="API key of the tenant the evaluation is charged to")
    cpqu_cmd.add_argument("--tenant", required=True, help="that tenant's id (its spend is read from Prometheus)")
    cpqu_cmd.add_argument("--doc", type=Path, default=None, help="write here instead of docs/COSTS.md")
    cpqu_cmd.set_defaults(run=cpqu)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
