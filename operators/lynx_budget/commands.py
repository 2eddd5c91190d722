"""`lynx budget ...`: the budget admin commands, on the local budgets file (`lynx up`) or on TenantBudget
resources."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lynx.contracts.budgets import BudgetSpec
    from lynx_budget.store import BudgetStore


def budget_store(args: argparse.Namespace) -> BudgetStore:
    """The budgets this command line edits: the embedded default's local file (`lynx up`), or with --kube the
    TenantBudget resources of the current kubeconfig context."""
    if args.kube:
        from lynx_budget.kubestore import KubeStore

        return KubeStore(args.namespace)
    from lynx_budget.local import local_store

    return local_store()


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

    from lynx.contracts.budgets import BudgetSpec
    from lynx.option_errors import refused_options
    from lynx_budget.admin import SPEC_OPTIONS

    store = budget_store(args)
    current = store.get(args.tenant)
    if current is None and args.cap is None:
        raise SystemExit(f"tenant {args.tenant!r} has no budget yet: --cap is required")
    changes = {"daily_cap_eur": args.cap, "timezone": args.timezone, "warning_percent": args.warning,
               "per_request_cap_eur": args.per_request_cap, "cheaper_near_cap": args.cheaper_near_cap}
    base = current.model_dump() if current else {"tenant": args.tenant}
    if args.unreachable_allowance is not None:  # 0 takes the opt-in away
        base["unreachable_allowance"] = {"per_gateway_eur": args.unreachable_allowance} \
            if args.unreachable_allowance else None
    try:
        if args.timezone is not None:
            ZoneInfo(args.timezone)
        spec = BudgetSpec.model_validate({**base, **{k: v for k, v in changes.items() if v is not None}})
    except ZoneInfoNotFoundError:
        raise SystemExit(f"lynx budget set: --timezone takes an IANA zone such as Europe/Paris, not {args.timezone!r}"
                         ) from None
    except ValueError as error:
        raise SystemExit(f"lynx budget set: {refused_options(error, SPEC_OPTIONS)}") from None
    save_budget(store, spec)


def budget_pause(args: argparse.Namespace) -> None:
    from lynx_budget.admin import pause, resume

    store = budget_store(args)
    change = pause if args.action == "pause" else resume
    save_budget(store, change(existing_budget(store, args.tenant)))


def budget_raise(args: argparse.Namespace) -> None:
    import getpass

    from lynx.option_errors import refused_options
    from lynx_budget.admin import RAISE_OPTIONS, add_raise

    store = budget_store(args)
    try:
        spec = add_raise(existing_budget(store, args.tenant), args.amount, args.hours, args.reason,
                         args.requested_by or getpass.getuser(), datetime.now(UTC))
    except ValueError as error:
        raise SystemExit(f"lynx budget raise: {refused_options(error, RAISE_OPTIONS)}") from None
    save_budget(store, spec)


def budget_remove(args: argparse.Namespace) -> None:
    if not budget_store(args).remove(args.tenant):
        raise SystemExit(f"lynx budget remove: tenant {args.tenant!r} has no budget")
    print(f"budget of {args.tenant} removed: it is a tenant without a budget once the budget controller has run")


def budget_why(args: argparse.Namespace) -> None:
    from lynx_budget.admin import explain

    store = budget_store(args)
    print(explain(existing_budget(store, args.tenant), store.status(args.tenant), datetime.now(UTC)))


def budget_export(args: argparse.Namespace) -> None:
    from lynx.telemetry.prometheus_api import PrometheusClient
    from lynx_budget.admin import export_csv
    from lynx_budget.local import LocalBudgetSettings

    settings = LocalBudgetSettings()
    with PrometheusClient(args.prometheus or settings.prometheus_url, settings.prometheus_timeout_seconds) as prometheus:
        text, problem = export_csv(budget_store(args), prometheus, datetime.now(UTC))
    sys.stdout.write(text)
    if problem:
        raise SystemExit(f"lynx budget export: {problem}")


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
    set_cmd.add_argument("--unreachable-allowance", type=float, metavar="EUR",
                         help="while the budget controller is unreachable, each gateway may spend this much beyond its "
                              "lease (the cap may be passed by gateways x EUR; docs/COSTS.md); 0 takes it away")
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
    remove_cmd = budget_cmd.add_parser("remove", help="delete a tenant's budget: it becomes a tenant without one")
    remove_cmd.add_argument("tenant")
    remove_cmd.set_defaults(run=budget_remove)
    why_cmd = budget_cmd.add_parser("why", help="why a tenant is in its state, and what to do")
    why_cmd.add_argument("tenant")
    why_cmd.set_defaults(run=budget_why)
    export_cmd = budget_cmd.add_parser(
        "export", help="today's spend by tenant, as CSV: every budget, and every tenant without one that has spent")
    export_cmd.add_argument("--prometheus", help="the Prometheus that scrapes the gateways, for the tenants without a "
                                                 "budget (default: LYNX_BUDGETS_PROMETHEUS_URL, else the local one)")
    export_cmd.set_defaults(run=budget_export)
    for command in budget_cmd.choices.values():
        command.add_argument("--kube", action="store_true",
                             help="act on the TenantBudget resources of the current kubeconfig context instead")
        command.add_argument("--namespace", help="with --kube: their namespace (default: the context's)")


