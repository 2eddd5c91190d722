"""The local observability stack, piece by piece: the OpenTelemetry Collector the services export to, Prometheus,
and Jaeger with the trace auditor. Each piece starts when its binary exists; a first run builds the missing ones
while lynx already serves (lynx.local.builds)."""

from __future__ import annotations

from pathlib import Path

from lynx.local.processes import ServiceProcess, start_service
from lynx.local.stack import (
    find_binary, load_config, prometheus_config, start_collector, start_jaeger, start_prometheus,
)
from lynx.local.topology import Topology, auditor_environment
from lynx.telemetry.prometheus_api import query_link

# The pieces by their scripts/build_tools.sh names, in the order a first run builds them: the collector first, since
# the services start once it runs (it queues their spans on disk until Jaeger is up), then Prometheus (the spend the
# budget loop enforces is read from it), then Jaeger.
PIECES = ("otelcol", "prometheus", "jaeger")
BINARIES = {"otelcol": "otelcol-lynx", "prometheus": "prometheus", "jaeger": "jaeger"}


def missing(pieces: tuple[str, ...] = PIECES) -> list[str]:
    """The pieces whose binary is not in the tool cache yet, in build order."""
    return [piece for piece in pieces if find_binary(BINARIES[piece]) is None]


def spans_endpoint(topology: Topology, pieces: set[str]) -> str | None:
    """Where the services send spans when ``pieces`` run or are coming: the collector (it holds them until Jaeger
    takes them), else Jaeger itself (spans sent while it is down are lost), else nowhere."""
    if "otelcol" in pieces:
        return topology.collector.otlp_url
    if "jaeger" in pieces:
        return topology.jaeger.otlp_url
    return None


def piece_urls(piece: str, topology: Topology) -> dict[str, str]:
    """What a person can open of ``piece``, by process name."""
    auditor = topology.url("auditor")
    return {
        "otelcol": {"otelcol": f"{topology.collector.otlp_url}/v1/traces (OTLP/HTTP; spans queue on disk while Jaeger "
                               "is away)"},
        "prometheus": {"prometheus": f"{query_link(topology.prometheus_url, 'lynx_tenant_cost_eur_total')} "
                                     "(API only: no UI)"},
        "jaeger": {"jaeger": f"{topology.jaeger.query_url}/api/v3/services (traces: /api/v3/traces/<trace id>)",
                   "auditor": f"{auditor}/metrics (orphan spans: POST {auditor}/v1/audit)"},
    }[piece]


def start_piece(piece: str, topology: Topology, folder: Path, env: dict[str, str],
                request_deadline_seconds: float) -> list[ServiceProcess]:
    """One piece of the stack on ``topology``'s ports, its data in ``folder``, detached from the caller."""
    binary = find_binary(BINARIES[piece])
    if binary is None:
        raise FileNotFoundError(f"no `{BINARIES[piece]}` in the tool cache (scripts/build_tools.sh {piece} builds it)")
    if piece == "otelcol":
        collector, _ = start_collector(binary, load_config("otelcol.yaml"), folder / "otelcol",
                                       topology.jaeger.otlp_url, topology.collector, detached=True)
        return [collector]
    if piece == "prometheus":
        config = prometheus_config(load_config("prometheus.yml"), topology.scrape_targets())
        prometheus = start_prometheus(binary, config, folder / "prometheus", port=topology.prometheus, detached=True)
        return [prometheus]
    jaeger, _ = start_jaeger(binary, load_config("jaeger.yaml"), folder / "jaeger", topology.jaeger, detached=True)
    # The auditor waits out the gateway's deadline before it calls a missing parent lost.
    auditor = start_service("auditor", {**env, **auditor_environment(topology.jaeger.query_url,
                                                                     request_deadline_seconds)},
                            folder / "auditor.log", port=topology.services["auditor"], detached=True)
    return [jaeger, auditor]
