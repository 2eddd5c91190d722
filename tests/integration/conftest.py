"""Starts lynx's four services as real processes, exporting spans to a real OTLP receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lynx.local.stopping import stop_processes
from lynx.contracts.budgets import BudgetDecisions
from lynx.accounting.tenants import TenantRegistry
from lynx.tools.models.cache import is_built, models_dir
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.retriever.settings import RetrieverSettings
from lynx.local.stack import find_binary, load_config, prometheus_config, start_jaeger, start_prometheus
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx.local.topology import UPSTREAMS, JaegerPorts, auditor_environment, models_environment, upstreams_environment
from lynx.service.polling import wait_for as wait_for  # the tests' poll helper, imported from here

from .otlp_sink import OtlpSink

MODEL_NAME = "SmolLM2-135M-Instruct"
START_TIMEOUT_SECONDS = 120
QUEUED_STACK_DEADLINE_SECONDS = 10
# The tests' auditors audit every 2 s over the last 15 minutes (topology.auditor_environment's figures).
TEST_AUDITS = {"interval_seconds": 2, "lookback_seconds": 900}


@dataclass
class Stack:
    gateway: ServiceProcess
    tokenizer: ServiceProcess
    retriever: ServiceProcess
    decoder: ServiceProcess
    key: str
    sink: OtlpSink
    tenant: str = ""

    def processes(self) -> list[ServiceProcess]:
        """The four services."""
        return [self.gateway, self.decoder, self.retriever, self.tokenizer]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def upstreams_environment(self) -> dict[str, str]:
        """A gateway's way to these services (this stack's, or another in front of them)."""
        return upstreams_environment({name: getattr(self, name).url for name in UPSTREAMS})


def built_models() -> Path:
    out = models_dir()
    if not is_built(out):
        pytest.fail(f"models are not built in {out}: run scripts/test.sh (it runs `lynx models build`)")
    return out


@pytest.fixture(scope="session")
def models() -> Path:
    return built_models()


@pytest.fixture(scope="session")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as receiver:
        yield receiver


def service_environment(models: Path, sink: OtlpSink, tenants: Path) -> dict[str, str]:
    """What every service process of the tests runs with: the built models, the index, a tenants file, spans to ``sink``."""
    return {
        **os.environ,
        **models_environment(models),
        "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
        "LYNX_GATEWAY_TENANTS_FILE": str(tenants),
        # Never the default path `lynx up`'s budget loop writes: no test gateway may pick up a developer's caps.
        "LYNX_GATEWAY_BUDGETS_FILE": str(tenants.with_name("budgets.json")),
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


@pytest.fixture(scope="session")
def base_env(models: Path, sink: OtlpSink, tmp_path_factory) -> dict[str, str]:
    return service_environment(models, sink, tmp_path_factory.mktemp("tenants") / "tenants.json")


def start_stack(env: dict[str, str], log_dir: Path, sink: OtlpSink,
                overrides: dict[str, dict[str, str]] | None = None) -> Stack:
    """The four services; ``overrides`` adds environment variables per service name."""
    overrides = overrides or {}
    tokenizer = start_service("tokenizer", {**env, **overrides.get("tokenizer", {})}, log_dir / "tokenizer.log")
    retriever = start_service("retriever", {**env, **overrides.get("retriever", {})}, log_dir / "retriever.log")
    decoder = start_service("decoder", {**env, **overrides.get("decoder", {})}, log_dir / "decoder.log")
    gateway = start_service("gateway", {
        **env, **overrides.get("gateway", {}),
        **upstreams_environment({"tokenizer": tokenizer.url, "retriever": retriever.url, "decoder": decoder.url})},
        log_dir / "gateway.log")
    stack = Stack(gateway, tokenizer, retriever, decoder, "", sink)
    services = [tokenizer, retriever, decoder, gateway]
    try:
        wait_ready(services, START_TIMEOUT_SECONDS)
    except Exception:
        stop_processes(services)
        raise
    stack.tenant = f"tenant-{gateway.url.rsplit(':', 1)[1]}"
    stack.key = TenantRegistry(Path(env["LYNX_GATEWAY_TENANTS_FILE"])).add(stack.tenant)
    return stack


@pytest.fixture(scope="session")
def stack(base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """The default deployment: 8 slots, a roomy queue."""
    running = start_stack(base_env, tmp_path_factory.mktemp("logs"), sink)
    yield running
    stop_processes(running.processes())


@pytest.fixture(scope="session")
def tight_stack(base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """One slot, one queue place and a 6-second deadline: for overload and deadline paths."""
    running = start_stack(base_env, tmp_path_factory.mktemp("tight-logs"), sink, {
        "decoder": {"LYNX_DECODER_KV_SLOTS": "1", "LYNX_DECODER_QUEUE_CAPACITY": "1"},
        "gateway": {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": "6"}})
    yield running
    stop_processes(running.processes())


@pytest.fixture(scope="session")
def queued_stack(base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """One slot, a deep queue and a 10-second deadline: more work can queue than can finish in time."""
    running = start_stack(base_env, tmp_path_factory.mktemp("queued-logs"), sink, {
        "decoder": {"LYNX_DECODER_KV_SLOTS": "1", "LYNX_DECODER_QUEUE_CAPACITY": "32"},
        "gateway": {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": str(QUEUED_STACK_DEADLINE_SECONDS)}})
    yield running
    stop_processes(running.processes())


@dataclass
class ObservedStack:
    """The services exporting to a real Jaeger, scraped by a real Prometheus, audited by the auditor."""

    services: Stack
    jaeger: ServiceProcess
    jaeger_ports: JaegerPorts
    prometheus: ServiceProcess
    auditor: ServiceProcess
    audit_complete_after: float  # the auditor's request deadline + export delay

    @property
    def trace_store_url(self) -> str:
        """Jaeger's query API."""
        return self.jaeger_ports.query_url

    @property
    def trace_store_otlp(self) -> str:
        """Jaeger's OTLP/HTTP receiver."""
        return self.jaeger_ports.otlp_url

    def query(self, expr: str, prometheus: ServiceProcess | None = None) -> list[dict]:
        """The instant vector of ``expr``; PrometheusError also for a query Prometheus answered doubtfully (warnings
        or infos): a panel must not be such a query."""
        with PrometheusClient((prometheus or self.prometheus).url) as client:
            return client.query(expr)

    def start_prometheus(self, work_dir: Path) -> ServiceProcess:
        return scraping_prometheus(self.services, self.auditor, work_dir)


def scraping_prometheus(services: Stack, auditor: ServiceProcess, work_dir: Path) -> ServiceProcess:
    """A Prometheus scraping the services and the auditor every 2 s, with an empty TSDB."""
    targets = {p.name: p.url.removeprefix("http://") for p in [*services.processes(), auditor]}
    config = prometheus_config(load_config("prometheus.yml"), targets)
    config["global"]["scrape_interval"] = "2s"
    prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config, work_dir)
    wait_ready([prometheus], START_TIMEOUT_SECONDS)
    return prometheus


def required_binary(name: str, how: str) -> Path:
    binary = find_binary(name)
    if binary is None:
        pytest.fail(f"`{name}` is required by the test suite and was not found: {how}")
    return binary


def start_trace_store(work_dir: Path) -> tuple[ServiceProcess, JaegerPorts]:
    """A Jaeger on free ports keeping its traces in ``work_dir``, ready."""
    jaeger, ports = start_jaeger(required_binary("jaeger", "scripts/build_tools.sh jaeger"), load_config("jaeger.yaml"),
                                 work_dir)
    try:
        wait_ready([jaeger], START_TIMEOUT_SECONDS)
    except Exception:
        stop_processes([jaeger])
        raise
    return jaeger, ports


@pytest.fixture(scope="session")
def observed(base_env, sink, tmp_path_factory) -> Iterator[ObservedStack]:
    from lynx.gateway.settings import GatewaySettings

    work = tmp_path_factory.mktemp("observed")
    required_binary("prometheus", "scripts/build_tools.sh prometheus")  # fail before starting anything
    jaeger, ports = start_trace_store(work / "jaeger")
    started: list[ServiceProcess] = [jaeger]
    try:
        env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": ports.otlp_url}
        # Spans go straight to Jaeger here: the SDK's 0.2 s batch delay and Jaeger's indexing fit in 5 s.
        deadline, export_delay = GatewaySettings().request_deadline_seconds, 5.0
        auditor_env = auditor_environment(ports.query_url, deadline, export_delay, **TEST_AUDITS)
        auditor = start_service("auditor", {**env, **auditor_env}, work / "auditor.log")
        started.append(auditor)
        services = start_stack(env, work, sink)
        started += services.processes()
        wait_ready([auditor], START_TIMEOUT_SECONDS)
        prometheus = scraping_prometheus(services, auditor, work / "prometheus")
        started.append(prometheus)
        yield ObservedStack(services, jaeger, ports, prometheus, auditor, deadline + export_delay)
    finally:
        stop_processes(started)


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a metric's samples whose labels include ``labels``, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
                found = True
    if not found:
        raise KeyError(f"{name}{labels or ''} not exported")
    return total


@pytest.fixture(scope="session")
def faulty(observed: ObservedStack, base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """Services exporting to the observed stack's Jaeger, with fault injection on and a 5 s deadline."""
    env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": observed.trace_store_otlp}
    running = start_stack(env, tmp_path_factory.mktemp("faulty-logs"), sink, {
        "tokenizer": {"LYNX_TOKENIZER_FAULTS_ENABLED": "true"},
        "decoder": {"LYNX_DECODER_FAULTS_ENABLED": "true", "LYNX_DECODER_KV_SLOTS": "4"},
        "gateway": {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": "5"}})
    yield running
    stop_processes(running.processes())


def published_state(decisions: Path, tenant: str) -> str | None:
    """The tenant's state in the budget decisions published at ``decisions`` (None: none published for it yet)."""
    if not decisions.exists():
        return None
    decision = BudgetDecisions.model_validate_json(decisions.read_text()).tenants.get(tenant)
    return decision.state if decision else None
