"""The one description of a local deployment: where each process listens, how the processes find each other (the
environment each one starts with) and what Prometheus scrapes. `lynx up` takes the configured ports; the tests and
the benchmarks take the same wiring on free ports (``Topology.free``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lynx.local.processes import free_port

SERVICES = ("tokenizer", "retriever", "decoder", "gateway")
SERVEABLE = (*SERVICES, "auditor", "budgets")
# The services the gateway calls, each through LYNX_GATEWAY_<NAME>_URL.
UPSTREAMS = ("tokenizer", "retriever", "decoder")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class JaegerPorts:
    query_http: int  # the query API (and its placeholder UI page)
    query_grpc: int
    otlp_http: int  # the receiver the collector exports to
    health: int  # healthcheckv2: /status is 200 once every component has started
    metrics: int  # Jaeger's own Prometheus metrics

    @classmethod
    def free(cls) -> JaegerPorts:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())

    @property
    def query_url(self) -> str:
        return f"http://{HOST}:{self.query_http}"

    @property
    def otlp_url(self) -> str:
        return f"http://{HOST}:{self.otlp_http}"


@dataclass(frozen=True)
class CollectorPorts:
    otlp_http: int  # the receiver the services export to
    health: int
    metrics: int

    @classmethod
    def free(cls) -> CollectorPorts:
        return cls(free_port(), free_port(), free_port())

    @property
    def otlp_url(self) -> str:
        return f"http://{HOST}:{self.otlp_http}"


# `lynx up`'s observability ports: Prometheus, the collector and Jaeger on their usual ports, except Jaeger's OTLP
# receiver (4319: the collector in front of it has 4318) and its health and metrics ports (beside the collector's).
PROMETHEUS_PORT = 9090
LOCAL_COLLECTOR_PORTS = CollectorPorts(otlp_http=4318, health=13133, metrics=8888)
LOCAL_JAEGER_PORTS = JaegerPorts(query_http=16686, query_grpc=16685, otlp_http=4319, health=13134, metrics=8889)


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


@dataclass(frozen=True)
class Topology:
    """Every process's port on one host."""

    services: Mapping[str, int]  # each of SERVEABLE
    prometheus: int
    collector: CollectorPorts
    jaeger: JaegerPorts
    host: str = field(default=HOST)

    @classmethod
    def configured(cls) -> Topology:
        """`lynx up`'s: the services' settings' ports, the observability stack's usual ones."""
        return cls({name: configured_port(name) for name in SERVEABLE}, PROMETHEUS_PORT, LOCAL_COLLECTOR_PORTS,
                   LOCAL_JAEGER_PORTS)

    @classmethod
    def free(cls) -> Topology:
        """Free ports throughout: a deployment beside any other on the machine."""
        return cls({name: free_port() for name in SERVEABLE}, free_port(), CollectorPorts.free(), JaegerPorts.free())

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.services[name]}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus}"

    def scrape_targets(self, names: tuple[str, ...] = SERVEABLE) -> dict[str, str]:
        """Prometheus' static targets (``prometheus_config``) for ``names``."""
        return {name: f"{self.host}:{self.services[name]}" for name in names}

    def all_ports(self) -> tuple[int, ...]:
        """Every port the deployment binds."""
        return (*self.services.values(), self.prometheus, *vars(self.collector).values(), *vars(self.jaeger).values())


def models_environment(models: Path) -> dict[str, str]:
    """Where the tokenizer, the decoder and the retriever read the models ``lynx models build`` wrote in ``models``."""
    return {"LYNX_TOKENIZER_MODEL_DIR": str(models / "decoder"), "LYNX_DECODER_MODEL_DIR": str(models / "decoder"),
            "LYNX_RETRIEVER_EMBEDDER_DIR": str(models / "embedder")}


def upstreams_environment(urls: Mapping[str, str]) -> dict[str, str]:
    """The gateway's way to the services it calls: ``urls`` names each of UPSTREAMS."""
    return {f"LYNX_GATEWAY_{name.upper()}_URL": urls[name] for name in UPSTREAMS}


@dataclass(frozen=True)
class BudgetFiles:
    """The budget loop's files (`lynx serve budgets`): the budgets it applies, its state, the decisions it
    publishes where the gateway reads them (LYNX_GATEWAY_BUDGETS_FILE), its spend-lease ledger, and the token the
    gateways present when they ask it for leases."""

    budgets: Path
    state: Path
    decisions: Path
    leases: Path
    lease_token: Path

    @classmethod
    def in_folder(cls, folder: Path) -> BudgetFiles:
        return cls(folder / "budgets.yaml", folder / "budget-state.json", folder / "budget-decisions.json",
                   folder / "budget-leases.json", folder / "lease-token")

    def environment(self) -> dict[str, str]:
        """Where the budget loop and the `lynx budget` commands find these files."""
        return {"LYNX_BUDGETS_BUDGETS_FILE": str(self.budgets), "LYNX_BUDGETS_STATE_FILE": str(self.state),
                "LYNX_BUDGETS_DECISIONS_FILE": str(self.decisions), "LYNX_BUDGETS_LEASES_FILE": str(self.leases),
                "LYNX_BUDGETS_LEASE_TOKEN_FILE": str(self.lease_token)}


def lease_environment(controller_url: str, token_file: Path | None = None) -> dict[str, str]:
    """A gateway's way to the budget controller that grants its spend leases (``token_file``: the shared token, when
    not the default one in the cache)."""
    env = {"LYNX_GATEWAY_BUDGET_CONTROLLER_URL": controller_url}
    if token_file is not None:
        env["LYNX_GATEWAY_LEASE_TOKEN_FILE"] = str(token_file)
    return env


def usage_environment(prometheus_url: str) -> dict[str, str]:
    """The Prometheus a gateway reads tenants' spend from for GET /v1/lynx/usage (the budget loop's)."""
    return {"LYNX_GATEWAY_PROMETHEUS_URL": prometheus_url}


def budget_loop_environment(files: BudgetFiles, prometheus_url: str,
                            interval_seconds: float | None = None) -> dict[str, str]:
    """The budget loop reading ``files``' budgets and the spend in ``prometheus_url``."""
    env = {**files.environment(), "LYNX_BUDGETS_PROMETHEUS_URL": prometheus_url}
    if interval_seconds is not None:
        env["LYNX_BUDGETS_INTERVAL_SECONDS"] = f"{interval_seconds:g}"
    return env


def auditor_environment(trace_store_url: str, request_deadline_seconds: float, export_delay_seconds: float | None = None,
                        interval_seconds: float | None = None, lookback_seconds: float | None = None,
                        kind: str = "jaeger") -> dict[str, str]:
    """The trace auditor reading ``trace_store_url``; it waits out the gateway's request deadline (and the export
    delay) before it calls a missing parent lost. Unset figures keep the auditor's defaults."""
    env = {"LYNX_AUDITOR_TRACE_STORE_URL": trace_store_url, "LYNX_AUDITOR_TRACE_STORE_KIND": kind,
           "LYNX_AUDITOR_REQUEST_DEADLINE_SECONDS": f"{request_deadline_seconds:g}"}
    optional = {"LYNX_AUDITOR_EXPORT_DELAY_SECONDS": export_delay_seconds,
                "LYNX_AUDITOR_INTERVAL_SECONDS": interval_seconds, "LYNX_AUDITOR_LOOKBACK_SECONDS": lookback_seconds}
    env.update({name: f"{value:g}" for name, value in optional.items() if value is not None})
    return env
