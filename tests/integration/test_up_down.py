"""The README's commands for real: `lynx down && scripts/up.sh`, twice, on the fixed ports, Jaeger and Prometheus
included; the demo tenant's key the same both times."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from lynx.local.run import run_dir
from lynx.local.stopping import stop_phases
from lynx.local.processes import KILL_WAIT_SECONDS
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
    runtime = httpx.get(f"{PROMETHEUS}/api/v1/status/runtimeinfo", timeout=10).json()["data"]
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
    body = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=10).json()
    return {series["metric"]["__name__"] for series in body["data"]["result"]}


def assert_demo_budget_metrics_within(seconds: float) -> None:
    """`lynx up` gives the demo tenant a daily budget: the tenants dashboard's budget panels have their data soon
    after the first request (one budget-loop interval and a scrape), with no `lynx budget set` by hand."""
    wait_for(lambda: demo_budget_series() >= DEMO_BUDGET_METRICS, seconds, "the demo tenant's budget metrics",
             interval=1, explain=lambda: f"found only {sorted(demo_budget_series())}")


def test_down_then_up_works_twice_and_down_leaves_nothing_running(tmp_path):
    required_binary("jaeger", "scripts/build_tools.sh jaeger")
    prometheus = required_binary("prometheus", "scripts/build_tools.sh prometheus")
    # Everything else as a user has it; only the demo tenant's key and budget (and the decisions the budget loop
    # publishes for the gateway) go to files of the test's own.
    budget_files = BudgetFiles.in_folder(tmp_path)
    env = {**os.environ, "LYNX_GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.json"),
           "LYNX_GATEWAY_BUDGETS_FILE": str(budget_files.decisions), **budget_files.environment()}
    assert lynx_down(env).returncode == 0
    keys = []
    try:
        for _ in range(2):
            up = run(["bash", str(REPO / "scripts" / "up.sh")], env, UP_TIMEOUT_SECONDS)
            assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
            keys.append(key := demo_key(up))
            started = json.loads((run_dir() / "pids.json").read_text())
            assert {"jaeger", "otelcol", "prometheus", "auditor", "tokenizer", "retriever", "decoder",
                    "gateway"} <= started.keys()
            assert "skipped" not in up.stderr, up.stderr
            assert_observability_as_the_chart(started["prometheus"], prometheus, started["jaeger"])
            assert httpx.get(f"{GATEWAY}/readyz", timeout=10).status_code == 200
            answer = httpx.post(f"{GATEWAY}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 16,
                                      "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            assert all(accepts_connections(port) for port in PORTS.values())
            assert_demo_budget_metrics_within(BUDGET_METRICS_SECONDS)

            down = lynx_down(env)
            assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
            for name, pid in started.items():
                assert (f"stopped {name} (pid {pid})" in down.stdout
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
