"""The chaos script (scripts/chaos.py) against local processes, started as `lynx up` starts them (each in its own
process group, recorded in a run directory's pids.json) but on free ports in a run directory of the test's own:
scenarios 1-4 shortened with every check green, a planted orphan span turning a run red, and scenario 5 (Prometheus
down) with a tenant the budget loop has blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from lynx.telemetry.tracestore import TraceStoreClient
from lynx.local.stopping import stop_phases
from lynx.local.topology import SERVICES, UPSTREAMS, BudgetFiles, Topology, budget_loop_environment, upstreams_environment
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import running_groups, start_service, stop_groups, wait_ready
from lynx.local.stack import load_config, prometheus_config, start_collector, start_jaeger, start_prometheus

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, published_state, required_binary, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHAOS = [sys.executable, str(REPO / "scripts" / "chaos.py")]
# Fault injection on, explicitly, on the tokenizer only: scenario 3's default service.
FAULTY = {"tokenizer": {"LYNX_TOKENIZER_FAULTS_ENABLED": "true"}}
SHORT = ["--lead", "4", "--tail", "4", "--gap", "1", "--fault-seconds", "5", "--trace-store-outage", "8",
         "--trace-settle", "3", "--trace-wait", "30", "--scrape-wait", "60", "--concurrency", "3", "--max-tokens", "16"]
RUN_TIMEOUT_SECONDS = 900


@dataclass
class LocalRun:
    run_dir: Path
    gateway: str
    trace_store: str  # Jaeger's query API
    trace_store_otlp: str
    prometheus: str
    keys: tuple[str, ...]
    budget_files: BudgetFiles
    budget_env: dict[str, str]  # where the `lynx budget` commands find the budget loop's files

    def pids(self) -> dict[str, int]:
        return json.loads((self.run_dir / "pids.json").read_text())

    def chaos_args(self) -> list[str]:
        keys = [arg for key in self.keys for arg in ("--key", key)]
        return ["--target", "local", "--run-dir", str(self.run_dir), "--gateway-url", self.gateway,
                "--trace-store-url", self.trace_store, "--prometheus-url", self.prometheus, *keys]


def start_local_run(work: Path, env: dict[str, str]) -> LocalRun:
    """Jaeger, the collector in front of it, the four services and a Prometheus scraping them every second, each
    leading its own process group (detached, as `lynx up` starts them), with their pids in ``work``/pids.json: `lynx
    up`'s topology on free ports."""
    work.mkdir(parents=True, exist_ok=True)
    pids_file = work / "pids.json"
    topology = Topology.free()
    jaeger, ports = start_jaeger(required_binary("jaeger", "scripts/build_tools.sh jaeger"), load_config("jaeger.yaml"),
                                 work / "jaeger", topology.jaeger, detached=True)
    started = [jaeger]
    pids_file.write_text(json.dumps({"jaeger": jaeger.process.pid}))
    try:
        collector, collector_ports = start_collector(
            required_binary("otelcol-lynx", "scripts/build_tools.sh otelcol"), load_config("otelcol.yaml"),
            work / "otelcol", ports.otlp_url, topology.collector, detached=True)
        started.append(collector)
        pids_file.write_text(json.dumps({p.name: p.process.pid for p in started}))
        wait_ready(started, START_TIMEOUT_SECONDS)
        budget_files = BudgetFiles.in_folder(work)
        env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": collector_ports.otlp_url,
               "LYNX_GATEWAY_TENANTS_FILE": str(work / "tenants.json"),
               "LYNX_GATEWAY_BUDGETS_FILE": str(budget_files.decisions)}
        upstreams = upstreams_environment({name: topology.url(name) for name in UPSTREAMS})
        services = {name: start_service(name, {**env, **FAULTY.get(name, {}), **(upstreams if name == "gateway" else {})},
                                        work / f"{name}.log", port=topology.services[name], detached=True)
                    for name in SERVICES}
        started += services.values()
        pids_file.write_text(json.dumps({p.name: p.process.pid for p in started}))
        config = prometheus_config(load_config("prometheus.yml"), topology.scrape_targets(SERVICES))
        config["global"]["scrape_interval"] = "1s"
        prometheus = start_prometheus(required_binary("prometheus", "scripts/build_tools.sh prometheus"), config,
                                      work / "prometheus", port=topology.prometheus, detached=True)
        started.append(prometheus)
        pids_file.write_text(json.dumps({p.name: p.process.pid for p in started}))
        # The budget loop of `lynx up`, deciding every second from this Prometheus, for the gateway's budgets file.
        budget_env = {**env, **budget_files.environment()}
        budgets = start_service("budgets", {**env, **budget_loop_environment(budget_files, topology.prometheus_url, 1)},
                                work / "budgets.log", port=topology.services["budgets"], detached=True)
        started.append(budgets)
        pids_file.write_text(json.dumps({p.name: p.process.pid for p in started}))
        wait_ready(started, START_TIMEOUT_SECONDS)
    except BaseException:
        stop_local_run(work)
        raise
    registry = TenantRegistry(work / "tenants.json")
    keys = (registry.add("chaos-a"), registry.add("chaos-b"))
    return LocalRun(work, services["gateway"].url, ports.query_url, ports.otlp_url, prometheus.url, keys, budget_files,
                    budget_env)


def stop_local_run(work: Path) -> None:
    """What `lynx down` does, for this run directory: phase by phase (lynx.local.stopping.stop_phases)."""
    for group, grace in stop_phases(json.loads((work / "pids.json").read_text()).items()):
        for _ in stop_groups(group, grace):
            pass


@pytest.fixture(scope="module")
def local_run(base_env, tmp_path_factory) -> Iterator[LocalRun]:
    run = start_local_run(tmp_path_factory.mktemp("chaos-run"), base_env)
    try:
        yield run
    finally:
        stop_local_run(run.run_dir)


def chaos(run: LocalRun, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CHAOS, *run.chaos_args(), *SHORT, *args], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_SECONDS)
    print(result.stdout, result.stderr[-3000:], sep="\n")
    return result


def scenario_table(stdout: str, number: int) -> str:
    """One scenario's block of the output."""
    start = stdout.index(f"Scenario {number}:")
    end = stdout.find("\nScenario ", start + 1)
    return stdout[start:end if end > 0 else None]


def test_scenarios_1_to_4_shortened_pass_every_check(local_run: LocalRun):
    before = local_run.pids()
    result = chaos(local_run, "--scenario", "1", "--scenario", "2", "--scenario", "3", "--scenario", "4")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for number in (1, 2, 3, 4):
        block = scenario_table(result.stdout, number)
        assert "— PASS" in block and "FAILED" not in block, block
        assert "orphan spans" in block and "costs returned = cost counter increase" in block, block
    # Independently of the script's own account: every service was really replaced by a new process, and no old
    # one is left running.
    after = local_run.pids()
    assert all(after[name] != before[name] for name in (*SERVICES, "jaeger")), (before, after)
    assert running_groups({before[name] for name in (*SERVICES, "jaeger")}) == set()
    assert httpx.get(f"{local_run.gateway}/readyz", timeout=10).status_code == 200


def test_scenario_3_is_refused_where_fault_injection_is_off(local_run: LocalRun):
    result = chaos(local_run, "--scenario", "3", "--fault-service", "retriever")
    assert result.returncode == 1
    assert "refused: fault injection is off on the retriever" in result.stdout, result.stdout
    assert "LYNX_RETRIEVER_FAULTS_ENABLED=true" in result.stdout


def plant_orphan(trace_store_otlp: str, trace_id: str) -> None:
    """One span in ``trace_id`` whose parent span is never exported."""
    provider = TracerProvider(resource=Resource.create({"service.name": "lynx-test-planted"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{trace_store_otlp}/v1/traces")))
    missing_parent = SpanContext(int(trace_id, 16), int.from_bytes(os.urandom(8), "big"), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
    provider.get_tracer("planted").start_span("planted-orphan",
                                              context=set_span_in_context(NonRecordingSpan(missing_parent))).end()
    provider.shutdown()


def test_a_planted_orphan_span_turns_the_run_red(local_run: LocalRun, tmp_path: Path):
    records = tmp_path / "records.jsonl"
    process = subprocess.Popen([*CHAOS, *local_run.chaos_args(), *SHORT, "--scenario", "3", "--lead", "2",
                                "--fault-seconds", "2", "--tail", "2", "--records", str(records)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def recorded_trace() -> str | None:
            lines = records.read_text().splitlines() if records.exists() else []
            return next((json.loads(line)["trace_id"] for line in lines if json.loads(line)["trace_id"]), None)

        trace_id = wait_for(recorded_trace, 120, "a request recorded by the chaos run", interval=0.2)
        plant_orphan(local_run.trace_store_otlp, trace_id)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        process.kill()
    print(stdout, stderr[-3000:], sep="\n")
    assert process.returncode == 1, stdout
    orphans = next(line for line in scenario_table(stdout, 3).splitlines() if line.strip().startswith("orphan spans"))
    assert orphans.split()[2] == "1" and orphans.rstrip().endswith("FAILED"), orphans
    assert f"{trace_id} lynx-test-planted 'planted-orphan'" in stdout
    # The orphan is really in Jaeger, as planted: the script read it from there.
    store = TraceStoreClient(local_run.trace_store)
    try:
        assert "planted-orphan" in {s.name for s in store.trace(trace_id)}
    finally:
        store.close()



def budget_state(run: LocalRun, tenant: str) -> str | None:
    return published_state(run.budget_files.decisions, tenant)


def ask(run: LocalRun, key: str) -> httpx.Response:
    return httpx.post(f"{run.gateway}/v1/chat/completions", timeout=60, headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL_NAME, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})


def test_scenario_5_keeps_a_blocked_tenant_blocked_while_prometheus_is_down(local_run: LocalRun):
    key = TenantRegistry(local_run.run_dir / "tenants.json").add("chaos-capped")
    answer = ask(local_run, key)
    assert answer.status_code == 200, answer.text
    # A cap below what the tenant has spent today: the loop blocks it once Prometheus has scraped that spend.
    done = subprocess.run([sys.executable, "-m", "lynx.cli", "budget", "set", "chaos-capped", "--cap", "0.000001"],
                          env=local_run.budget_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: budget_state(local_run, "chaos-capped") == "Blocked", 60, "the budget loop to block the tenant")
    prometheus_before = local_run.pids()["prometheus"]

    result = chaos(local_run, "--scenario", "5", "--blocked-key", key, "--prometheus-outage", "8")

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    block = scenario_table(result.stdout, 5)
    assert "— PASS" in block and "FAILED" not in block, block
    assert "blocked tenant stays blocked" in block and "costs returned = cost counter increase" in block, block
    # Independently: Prometheus really went and came back as a new process, and the tenant is still refused.
    assert local_run.pids()["prometheus"] != prometheus_before
    assert running_groups({prometheus_before}) == set()
    refused = ask(local_run, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota", refused.text
