"""`lynx chaos` (also scripts/chaos.py): run the scenarios against a target, print a table per scenario, exit 1 if any
check failed. Nothing heavy is imported until the command runs: lynx.cli imports this module in every service."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from lynx.local.topology import UPSTREAMS

SCENARIO_NUMBERS = ("1", "2", "3", "4", "5")
# The load's own end is only a safety net: each scenario stops its load when it is done.
LOAD_SAFETY_SECONDS = 6 * 3600.0

DESCRIPTION = """\
Drives steady load through the gateway (streamed and not, one tenant per key), breaks the deployment while it runs,
and after each scenario checks: every request answered (2xx, or 4xx/5xx with an OpenAI error body; no reset, no
hang); every recorded trace in the trace store, without orphan spans; the costs returned to clients (failed requests included)
equal the increase of lynx_tenant_cost_eur_total in Prometheus within 0.1 %; no cost identity violation.

Scenarios: 1 SIGKILL a leaf service mid-load (pod deleted with grace 0); 2 restart every service gracefully while
streams are open; 3 latency and errors injected into a leaf service (refused unless its fault injection is enabled);
4 the trace store (Jaeger) stopped, then back; 5 Prometheus stopped, then back (needs --blocked-key).

Local target: the processes `lynx up` started (its run directory's pids.json); a killed or stopped process is started
again with its own command line and environment. Kubernetes target: the release's pods, found by the chart's labels;
give URLs that outlive a pod (a Service's ClusterIP, an ingress), not a port-forward.
"""


def add_chaos_command(commands) -> None:
    chaos = commands.add_parser("chaos", help="break a running lynx under load; check that traces and costs survive",
                                description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = chaos.add_argument_group("target")
    where.add_argument("--target", choices=("local", "kubernetes"), default="local")
    where.add_argument("--run-dir", type=Path, help="local: the run directory of `lynx up` (default its own)")
    where.add_argument("--namespace", default="lynx", help="kubernetes: the release's namespace (default lynx)")
    where.add_argument("--release", help="kubernetes: the release name (default: any lynx pods of the namespace)")
    where.add_argument("--kubeconfig", help="kubernetes: default $KUBECONFIG, else ~/.kube/config")
    where.add_argument("--gateway-url", default="http://127.0.0.1:8080")
    where.add_argument("--trace-store-url", default="http://127.0.0.1:16686",
                       help="the trace store's query API (default: the local Jaeger's)")
    where.add_argument("--trace-store-kind", choices=("jaeger", "tempo"), default="jaeger",
                       help="jaeger (default), or tempo for a Tempo of your own (its HTTP port, 3200)")
    where.add_argument("--prometheus-url", default="http://127.0.0.1:9090")

    what = chaos.add_argument_group("scenarios")
    what.add_argument("--scenario", action="append", choices=(*SCENARIO_NUMBERS, "all"),
                      help="run this scenario; repeat for several (default: all, in order)")
    what.add_argument("--kill-service", choices=UPSTREAMS, default="decoder",
                      help="scenario 1: which service is killed (default decoder)")
    what.add_argument("--fault-service", choices=UPSTREAMS, default="tokenizer",
                      help="scenario 3: which service gets the faults (default tokenizer)")
    what.add_argument("--fault-latency", type=float, default=0.2, help="scenario 3: seconds added to each call")
    what.add_argument("--fault-error-rate", type=float, default=0.2, help="scenario 3: share of calls failed")
    what.add_argument("--blocked-key", help="scenario 5: the key of a tenant blocked at its daily cap")

    load = chaos.add_argument_group("load")
    load.add_argument("--key", action="append", default=[],
                      help="an API key; repeat for several tenants (local default: tenants chaos-1 and chaos-2, "
                           "made in the gateway's tenants file for the run and removed after it)")
    load.add_argument("--concurrency", type=int, default=4)
    load.add_argument("--max-tokens", type=int, default=32)
    load.add_argument("--stream-share", type=float, default=0.5)
    load.add_argument("--timeout", type=float, default=120, help="seconds one request may take before it is a hang")
    load.add_argument("--records", type=Path, help="write every request's record here, one JSON line each")

    times = chaos.add_argument_group("durations (seconds)")
    for flag, field, default, says in DURATION_FLAGS:
        times.add_argument(flag, dest=field, type=float, default=default, metavar="SECONDS",
                           help=f"{says} (default {default:g})")
    chaos.set_defaults(run=run_chaos)


DURATION_FLAGS = (
    ("--lead", "lead_s", 10.0, "load before the disruption"),
    ("--tail", "tail_s", 15.0, "load once the deployment is whole again"),
    ("--gap", "gap_s", 3.0, "scenario 2: load between two restarts"),
    ("--fault-seconds", "fault_s", 30.0, "scenario 3: how long the faults stay"),
    ("--trace-store-outage", "trace_store_outage_s", 30.0, "scenario 4: how long the trace store is down"),
    ("--prometheus-outage", "prometheus_outage_s", 30.0, "scenario 5: how long Prometheus is down"),
    ("--trace-settle", "trace_settle_s", 20.0, "age of the last trace before the trace store is read"),
    ("--trace-wait", "trace_wait_s", 60.0, "how long a trace that looks broken may take to become whole"),
    ("--scrape-wait", "scrape_wait_s", 120.0, "how long Prometheus may take to scrape the counters after the load"),
)


FAULT_OPTIONS = {"latency_seconds": "--fault-latency", "error_rate": "--fault-error-rate"}


def selected(args: argparse.Namespace) -> list[int]:
    chosen = args.scenario or ["all"]
    return [int(n) for n in SCENARIO_NUMBERS] if "all" in chosen else sorted({int(n) for n in chosen})


def make_target(args: argparse.Namespace):
    from lynx.tools.chaos.targets import KubernetesTarget, LocalTarget

    if args.target == "kubernetes":
        return KubernetesTarget(args.namespace, args.kubeconfig, args.release)
    from lynx.local.registry import run_dir

    return LocalTarget(args.run_dir or run_dir(), {"trace-store": args.trace_store_url, "prometheus": args.prometheus_url})


@contextlib.contextmanager
def load_keys(args: argparse.Namespace, target) -> Iterator[tuple[str, ...]]:
    """The keys given, or (local target) those of two tenants made in the gateway's tenants file for the run and
    removed after it."""
    if args.key:
        yield tuple(args.key)
        return
    if args.target != "local":
        raise SystemExit("lynx chaos: --key is required with --target kubernetes")
    from lynx.accounting.tenants import TenantRegistry

    registry = TenantRegistry(target.tenants_file)
    print(f"no --key: tenants chaos-1 and chaos-2 in {registry.path} for this run", file=sys.stderr)
    with registry.temporary("chaos-1", "chaos-2") as keys:
        yield keys


def run_chaos(args: argparse.Namespace) -> None:
    from lynx.tools.chaos.targets import TargetError

    try:
        target = make_target(args)
    except TargetError as error:
        raise SystemExit(f"lynx chaos: {error}") from None
    with load_keys(args, target) as keys:
        run_with_keys(args, target, keys)


def run_with_keys(args: argparse.Namespace, target, keys: tuple[str, ...]) -> None:
    import asyncio

    from lynx.tools.chaos.scenarios import Chaos, Durations, Options
    from lynx.tools.chaos.targets import TargetError
    from lynx.contracts.faults import FaultPlan
    from lynx.accounting.tenants import hash_key
    from lynx.tools.load.driver import LoadSpec
    from lynx.option_errors import refused_options

    try:
        tenants_by_hash = target.tenants()
    except TargetError as error:
        raise SystemExit(f"lynx chaos: {error}") from None
    unknown = [n for n, key in enumerate(keys, 1) if hash_key(key) not in tenants_by_hash]
    if unknown:
        raise SystemExit(f"lynx chaos: key(s) number {unknown} belong to no tenant of this gateway")
    try:
        load = LoadSpec(base_url=args.gateway_url, keys=keys, concurrency=args.concurrency,
                        duration_s=LOAD_SAFETY_SECONDS, max_tokens=args.max_tokens, stream_share=args.stream_share,
                        timeout_s=args.timeout)
        fault = FaultPlan(latency_seconds=args.fault_latency, error_rate=args.fault_error_rate)
    except ValueError as error:
        raise SystemExit(f"lynx chaos: {refused_options(error, FAULT_OPTIONS)}") from None
    durations = Durations(**{field: getattr(args, field) for _, field, _, _ in DURATION_FLAGS})
    options = Options(kill_service=args.kill_service, fault_service=args.fault_service, fault=fault,
                      blocked_key=args.blocked_key)
    chaos = Chaos(target, load, args.trace_store_url, args.prometheus_url,
                  tuple(sorted({tenants_by_hash[hash_key(k)] for k in keys})), durations, options,
                  trace_store_kind=args.trace_store_kind)
    print(f"lynx chaos on {target.describe()}: scenarios {', '.join(map(str, selected(args)))}; load of "
          f"{len(keys)} tenant(s) at {args.gateway_url}", flush=True)
    records = args.records.open("w") if args.records else None
    try:
        chaos.records_file = records
        results = asyncio.run(run_all(chaos, selected(args)))
    finally:
        if records is not None:
            records.close()
    if not all(result.ok for result in results):
        raise SystemExit(1)


async def run_all(chaos, numbers: list[int]) -> list:
    from lynx.tools.chaos.report import scenario_report, summary
    from lynx.tools.chaos.scenarios import SCENARIOS, run_scenario

    results = []
    for number in numbers:
        result = await run_scenario(SCENARIOS[number], chaos)
        print(scenario_report(result) + "\n", flush=True)
        results.append(result)
    print(summary(results), flush=True)
    return results
