"""The README's commands for real: `lynx down && scripts/up.sh`, twice, on the fixed ports, Jaeger and Prometheus
included; the demo tenant's key the same both times."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from lynx.local.registry import run_dir
from lynx.local.stopping import stop_phases
from lynx.telemetry.tracestore import TraceStoreClient
from lynx.local.processes import KILL_WAIT_SECONDS
from lynx.local.stack import TOOLS_BIN
from lynx.telemetry.prometheus_api import PrometheusClient
from lynx.local.topology import BudgetFiles

from .conftest import MODEL_NAME, required_binary, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LYNX = REPO / ".venv" / "bin" / "lynx"
GATEWAY = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"
JAEGER = "http://127.0.0.1:16686"
CHART_VALUES = REPO / "charts" / "lynx" / "values.yaml"
PORTS = {"gateway": 8080, "jaeger": 16686, "jaeger-otlp": 4319}
TRACES_KEPT_HOURS = 14 * 24  # as the chart keeps them
UP_TIMEOUT_SECONDS = 600
TRACE_TIMEOUT_SECONDS = 30
TOOLS_CACHE = TOOLS_BIN.parent
BUDGET_METRICS_SECONDS = 60
DEMO_BUDGET_METRICS = {"lynx_budget_cap_eur", "lynx_budget_spent_eur", "lynx_budget_remaining_eur", "lynx_budget_state",
                       "lynx_budget_refused_requests_total"}
DOWN_TIMEOUT_SECONDS = sum(grace for _, grace in stop_phases([])) + KILL_WAIT_SECONDS + 30


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def lynx_down(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([str(LYNX), "down"], env, DOWN_TIMEOUT_SECONDS)


def live_groups(pgids: set[int]) -> list[str]:
    """`ps` lines of the processes, zombies aside, whose group is one of ``pgids``: measured apart from lynx's /proc scan."""
    listing = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,comm="], capture_output=True, text=True, check=True)
    return [line for line in listing.stdout.splitlines()
            if int(line.split()[1]) in pgids and not line.split()[2].startswith("Z")]


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


def hours(duration: str) -> float:
    """A Go duration (336h, 336h0m0s, 90m) in hours."""
    return sum(float(n) * {"h": 1, "m": 1 / 60, "s": 1 / 3600}[unit] for n, unit in re.findall(r"([\d.]+)([hms])", duration))


def assert_observability_as_the_chart(prometheus_pid: int, prometheus_binary: Path, jaeger_pid: int) -> None:
    """The local Prometheus is the tool cache's build, and it and Jaeger keep data as long as the chart says."""
    assert Path(f"/proc/{prometheus_pid}/exe").resolve() == prometheus_binary.resolve()
    chart = yaml.safe_load(CHART_VALUES.read_text())
    with PrometheusClient(PROMETHEUS) as prometheus:
        runtime = prometheus.status("runtimeinfo")
    assert runtime["storageRetention"] == chart["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]["retention"]
    # Jaeger keeps spans on disk for 14 days: the configuration the running process was given (its --config file).
    (config_arg,) = [a for a in Path(f"/proc/{jaeger_pid}/cmdline").read_text().split("\0") if a.startswith("--config=")]
    config = yaml.safe_load(Path(config_arg.removeprefix("--config=")).read_text())
    (badger,) = [b["badger"] for b in config["extensions"]["jaeger_storage"]["backends"].values()]
    assert hours(badger["ttl"]["spans"]) == TRACES_KEPT_HOURS and badger["ephemeral"] is False
    assert Path(badger["directories"]["keys"]).is_relative_to(run_dir())
    assert httpx.get(f"{JAEGER}/api/v3/services", timeout=10).status_code == 200


def demo_budget_series() -> set[str]:
    """The budget metrics Prometheus holds for the demo tenant."""
    query = '{__name__=~"lynx_budget_.+", tenant="demo"}'
    with PrometheusClient(PROMETHEUS) as prometheus:
        return {series["metric"]["__name__"] for series in prometheus.query(query)}


def assert_demo_budget_metrics_within(seconds: float) -> None:
    """`lynx up` gives the demo tenant a daily budget: the tenants dashboard's budget panels have their data soon
    after the first request (one budget-loop interval and a scrape), with no `lynx budget set` by hand."""
    wait_for(lambda: demo_budget_series() >= DEMO_BUDGET_METRICS, seconds, "the demo tenant's budget metrics",
             interval=1, explain=lambda: f"found only {sorted(demo_budget_series())}")


def first_run_tools(cache: Path) -> Path:
    """A tool cache as a first run finds it, except for the collector: scripts/up.sh finds its build current (a copy of
    the real cache's), and `lynx up` must build Prometheus and Jaeger, for real with scripts/build_tools.sh, though
    quickly: Go's module and build caches are warm (the cold figures are in the README). A copy, and a cache of its
    own: a build here never touches the real cache."""
    (collector,) = TOOLS_CACHE.glob("otelcol-lynx-v*")
    shutil.copytree(collector, cache / collector.name, symlinks=False)
    return cache


def trace_services(trace_id: str) -> set[str]:
    """The services of the trace's spans in the local Jaeger, once it holds the whole trace with no orphan."""
    store = TraceStoreClient(JAEGER)

    def whole() -> set[str] | None:
        spans = store.trace(trace_id)
        ids = {span.span_id for span in spans}
        roots = [span for span in spans if not span.parent_span_id]
        orphans = [span for span in spans if span.parent_span_id and span.parent_span_id not in ids]
        services = {span.service for span in spans}
        return services if len(roots) == 1 and not orphans and len(services) == 4 else None

    try:
        return wait_for(whole, TRACE_TIMEOUT_SECONDS, f"trace {trace_id} whole in Jaeger", interval=0.5,
                        explain=lambda: f"spans: {[(s.service, s.name) for s in store.trace(trace_id)]}")
    finally:
        store.close()


def builds_log() -> str:
    return (run_dir() / "builds.log").read_text()


def test_a_first_run_then_a_warm_one_and_down_leaves_nothing_running(tmp_path):
    """The first `scripts/up.sh` of a machine builds the observability stack in the background and serves once the
    collector runs; the trace of its first completion reaches Jaeger whole and its cost reaches Prometheus. The
    second finds everything built. Both times `lynx down` leaves nothing running."""
    required_binary("jaeger", "scripts/build_tools.sh jaeger")
    required_binary("prometheus", "scripts/build_tools.sh prometheus")
    # Everything else as a user has it; only the demo tenant's key and budget (and the decisions the budget loop
    # publishes for the gateway) go to files of the test's own.
    budget_files = BudgetFiles.in_folder(tmp_path)
    env = {**os.environ, "LYNX_GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.json"),
           "LYNX_GATEWAY_BUDGETS_FILE": str(budget_files.decisions), **budget_files.environment()}
    first_run_cache = first_run_tools(tmp_path / "tools")
    first_run_env = {**env, "LYNX_TOOLS_CACHE": str(first_run_cache),
                     "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != TOOLS_CACHE / "bin")}
    assert lynx_down(env).returncode == 0
    keys = []
    try:
        for run_env, cache in ((first_run_env, first_run_cache), (env, TOOLS_CACHE)):
            first_run = run_env is first_run_env
            up = run(["bash", str(REPO / "scripts" / "up.sh")], run_env, UP_TIMEOUT_SECONDS)
            assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
            keys.append(key := demo_key(up))
            assert ("building prometheus, jaeger for the first time" in up.stderr) is first_run, up.stderr
            if first_run:
                wait_for(lambda: "the observability stack is up\n" in builds_log(), UP_TIMEOUT_SECONDS,
                         "the first run's builds", interval=1, explain=builds_log)
                assert json.loads((run_dir() / "builds.json").read_text()) == dict.fromkeys(
                    ("prometheus", "jaeger"), "ready")
            started = json.loads((run_dir() / "pids.json").read_text())
            assert {"jaeger", "otelcol", "prometheus", "auditor", "tokenizer", "retriever", "decoder",
                    "gateway"} <= started.keys()
            assert ("builds" in started) is first_run
            assert "skipped" not in up.stderr and "without" not in up.stderr, up.stderr
            assert_observability_as_the_chart(started["prometheus"], cache / "bin" / "prometheus", started["jaeger"])
            assert httpx.get(f"{GATEWAY}/readyz", timeout=10).status_code == 200
            headers = {"Authorization": f"Bearer {key}"}
            answer = httpx.post(f"{GATEWAY}/v1/chat/completions", headers=headers, timeout=120,
                                json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 16,
                                      "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            trace_id = answer.headers["x-lynx-trace-id"]
            assert trace_services(trace_id) == {"lynx-gateway", "lynx-tokenizer", "lynx-retriever",
                                                         "lynx-decoder"}
            assert all(accepts_connections(port) for port in PORTS.values())
            assert_demo_budget_metrics_within(BUDGET_METRICS_SECONDS)

            down = lynx_down(run_env)
            assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
            for name, pid in started.items():
                # The builder has exited once the stack was up: `lynx down` finds it gone.
                ended = f"{name} (pid {pid}) was not running" if name == "builds" else f"stopped {name} (pid {pid})"
                assert (ended in down.stdout
                        or f"killed {name} (pid {pid}) with SIGKILL" in down.stderr), f"{down.stdout}\n{down.stderr}"
            # `lynx down` has returned, so all of it must be gone already: waiting here would hide the bug.
            assert live_groups(set(started.values())) == []
            assert [name for name, port in PORTS.items() if accepts_connections(port)] == []
            assert not (run_dir() / "pids.json").exists()
        assert keys[1] == keys[0]
    finally:
        lynx_down(env)


def demo_key(up: subprocess.CompletedProcess) -> str:
    printed = re.search(r"tenant 'demo' API key: (\S+)", up.stdout)
    assert printed, up.stdout
    return printed.group(1)


def console_signs_in(up: subprocess.CompletedProcess, key: str) -> None:
    """The console `lynx up` printed takes the admin token it printed, and the demo key to the demo tenant's page."""
    printed = re.search(r"console: (\S+) \(admin token: ([^;\s]+);", up.stdout)
    assert printed, up.stdout
    url, token = printed.groups()
    for secret, lands_on in ((token, "/console/"), (key, "/console/tenants/demo")):
        with httpx.Client(timeout=60) as client:
            form = client.get(f"{url}signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            answer = client.post(f"{url}signin", data={"csrf": csrf, "token": secret})
            assert (answer.status_code, answer.headers.get("location")) == (303, lands_on), answer.text
            assert client.get(url + lands_on.removeprefix("/console/")).status_code == 200


def chat_status(key: str) -> int:
    return httpx.post(f"{GATEWAY}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                      json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 4, "retrieval_top_k": 0,
                            "messages": [{"role": "user", "content": "Hello"}]}).status_code


def test_down_then_up_keeps_the_demo_key(tmp_path):
    """The key `scripts/up.sh` printed still works after `lynx down && scripts/up.sh`, which prints it again; `lynx
    tenant show demo` prints it too, and `lynx tenant rotate demo` replaces it in the running gateway. Without the
    observability stack, so that it runs wherever lynx itself does."""
    env = {**os.environ, "LYNX_GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.json")}
    up_sh = ["bash", str(REPO / "scripts" / "up.sh"), "--no-observability"]
    assert lynx_down(env).returncode == 0
    try:
        first = run(up_sh, env, UP_TIMEOUT_SECONDS)
        assert first.returncode == 0, f"{first.stdout}\n{first.stderr}"
        key = demo_key(first)
        assert chat_status(key) == 200
        console_signs_in(first, key)
        assert lynx_down(env).returncode == 0

        again = run(up_sh, env, UP_TIMEOUT_SECONDS)
        assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
        assert demo_key(again) == key
        assert chat_status(key) == 200
        assert run([str(LYNX), "tenant", "show", "demo"], env, 60).stdout.strip() == key

        rotated = run([str(LYNX), "tenant", "rotate", "demo"], env, 60)
        assert rotated.returncode == 0, rotated.stderr
        assert (chat_status(key), chat_status(rotated.stdout.strip())) == (401, 200)
    finally:
        lynx_down(env)
