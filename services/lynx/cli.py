"""lynx's command line: parses the arguments and hands each command to the module that does it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lynx.tools.chaos.cli import add_chaos_command
from lynx.tools.load.cli import add_load_command
from lynx.local.run import DEMO_DAILY_CAP_EUR, down, ensure_index, up
from lynx.local.topology import SERVEABLE
from lynx.option_errors import CommandRefused

# Where a serveable's create_app lives when it is not lynx.<name>.app.
APP_MODULES = {"budgets": "lynx_budget.local"}


def app_factory(service: str):
    """The service's create_app, imported only when that service is the one asked for."""
    module = __import__(APP_MODULES.get(service, f"lynx.{service}.app"), fromlist=["create_app"])
    return module.create_app


def serve(args: argparse.Namespace) -> None:
    from lynx.service.shutdown import serve as serve_app

    serve_app(app_factory(args.service)())


def models_build(args: argparse.Namespace) -> None:
    from lynx.tools.models.cache import build

    print(build(args.precision, force=args.force))


def tenant_command(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.gateway.tenant_keys import LocalTenants

    key = getattr(LocalTenants(GatewaySettings().tenants_file), args.action)(args.tenant)
    print(key or f"tenant {args.tenant} removed: its key no longer works")


def dashboards_build(args: argparse.Namespace) -> None:
    from lynx.tools.dashboards.build import DASHBOARDS_DIR, write

    for path in write(args.out or DASHBOARDS_DIR):
        print(path)


def cpqu(args: argparse.Namespace) -> None:
    from lynx.gateway.settings import GatewaySettings
    from lynx.tools.quality.cpqu import default_document, record, run

    row = run(args.gateway, args.prometheus, args.key, args.tenant, GatewaySettings().model_name)
    document = args.doc or default_document()
    record(row, document)
    print(json.dumps({"week": row.week, "questions": row.questions, "correct": row.correct,
                      "cost_eur": row.cost_eur, "cpqu_eur": row.cpqu, "written": str(document)}))


def add_budget_commands(commands) -> None:
    """`lynx budget ...`, where the budget controller is installed: the service images ship lynx without it."""
    try:
        from lynx_budget.commands import add_budget_commands as add
    except ModuleNotFoundError:
        return
    add(commands)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lynx", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run one service in the foreground")
    serve_cmd.add_argument("service", choices=SERVEABLE)
    serve_cmd.set_defaults(run=serve)

    up_cmd = commands.add_parser("up", help="build what is missing and start lynx locally: the four services, the budget "
                                             "loop and the observability stack")
    up_cmd.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    up_cmd.add_argument("--tenant", default="demo")
    up_cmd.add_argument("--daily-cap", type=float, default=DEMO_DAILY_CAP_EUR, metavar="EUR",
                        help="the tenant's daily budget when it has none yet, so that the budget panels have data from the "
                             "first request (default %(default)s EUR; `lynx budget set` and `lynx budget remove` change it)")
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
    for action, says in (("add", "create a tenant and print its key (kept in a private file beside the tenants file)"),
                         ("show", "print a tenant's kept key again"),
                         ("rotate", "give a tenant a new key; the old one stops working at once, running gateways too"),
                         ("remove", "delete a tenant: its key stops working")):
        command = tenant_cmd.add_parser(action, help=says)
        command.add_argument("tenant")
        command.set_defaults(run=tenant_command)

    add_budget_commands(commands)
    add_load_command(commands)
    add_chaos_command(commands)

    dashboards_cmd = commands.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="action", required=True)
    dash_build = dashboards_cmd.add_parser("build", help="write dashboards/*.json from lynx.tools.dashboards")
    dash_build.add_argument("--out", type=Path, default=None, help="default: the repository's dashboards/")
    dash_build.set_defaults(run=dashboards_build)

    cpqu_cmd = commands.add_parser("cpqu", help="measure cost per quality unit into a CpQU table")
    cpqu_cmd.add_argument("--gateway", default="http://127.0.0.1:8080")
    cpqu_cmd.add_argument("--prometheus", default="http://127.0.0.1:9090")
    cpqu_cmd.add_argument("--key", required=True, help="API key of the tenant the evaluation is charged to")
    cpqu_cmd.add_argument("--tenant", required=True, help="that tenant's id (its spend is read from Prometheus)")
    cpqu_cmd.add_argument("--doc", type=Path, default=None,
                          help="the document whose CpQU table gets the week's row (default ~/.cache/lynx/work/cpqu/"
                               "COSTS.md); docs/COSTS.md also rewrites the dashboards that copy it")
    cpqu_cmd.set_defaults(run=cpqu)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except CommandRefused as refusal:
        raise SystemExit(f"lynx {' '.join(filter(None, (args.command, getattr(args, 'action', None))))}: {refusal}"
                         ) from None


if __name__ == "__main__":
    main()
