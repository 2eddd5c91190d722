"""`lynx load` on a short run against the test stack: its report and plots, its figures against the services' own
counters, the kernel's view of their memory and a second clock."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lynx.accounting.tenants import TenantRegistry

from .conftest import Stack, metric_value, wait_for

REQUESTS = 12
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHAT = {"endpoint": "/v1/chat/completions", "method": "POST"}


def gateway_counts(stack: Stack, tenants: list[str]) -> dict[str, float]:
    """The gateway's own count of chat requests, completion tokens and each tenant's spend."""
    text = httpx.get(f"{stack.gateway.url}/metrics", timeout=10).text

    def value(name: str, labels: dict[str, str]) -> float:
        try:
            return metric_value(text, name, labels)
        except KeyError:  # not exported until first counted
            return 0.0

    return {"requests": value("lynx_request_total", CHAT),
            "tokens": value("lynx_tokens_total", {"kind": "completion"}),
            **{tenant: value("lynx_tenant_cost_eur_total", {"tenant": tenant}) for tenant in tenants}}


def figures(markdown: str) -> dict[str, str]:
    """The report's two-column rows, {figure: value}."""
    return dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", markdown, re.MULTILINE))


def kernel_rss(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE).group(1)) * 1024


def test_load_reports_what_the_services_measured(stack: Stack, base_env, tmp_path):
    second = "load-second"
    second_key = TenantRegistry(Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])).add(second)
    tenants = [stack.tenant, second]
    services = {p.name: p for p in stack.processes()}
    before = gateway_counts(stack, tenants)
    out = tmp_path / "load"
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "lynx.cli", "load", "--url", stack.gateway.url, "--key", stack.key, "--key", second_key,
         "--requests", str(REQUESTS), "--concurrency", "3", "--max-tokens", "8", "--out", str(out),
         *(arg for name, p in services.items() for arg in ("--service", f"{name}={p.url}"))],
        capture_output=True, timeout=300)  # bytes: text mode would turn the progress line's \r into \n
    wall = time.monotonic() - began
    stdout, stderr = run.stdout.decode(), run.stderr.decode()
    assert run.returncode == 0, stderr
    rss = {name: kernel_rss(p.process.pid) for name, p in services.items()}

    markdown = (out / "report.md").read_text()
    assert stdout.startswith(markdown)
    assert markdown.startswith(f"# lynx load\n\n```sh\nlynx load --url {stack.gateway.url} --key KEY --key KEY "
                               f"--requests {REQUESTS} ")
    assert stack.key not in markdown and second_key not in markdown
    assert "\r" in stderr and f"{REQUESTS:6d} done" in stderr  # the progress line, rewritten in place

    # The gateway counts a request once its last byte is sent, which the client may see a moment before.
    def settled() -> dict[str, float]:
        after = gateway_counts(stack, tenants)
        return after if after["requests"] - before["requests"] >= REQUESTS else {}

    after = wait_for(settled, 10, f"the gateway to count {REQUESTS} chat requests")
    counted = {name: after[name] - before[name] for name in after}
    shown = figures(markdown)
    assert int(shown["requests"]) == REQUESTS == counted["requests"]
    assert int(shown["ok"]) == REQUESTS and int(shown["streamed"]) == REQUESTS // 2
    assert int(shown["output tokens"]) == counted["tokens"] > 0
    assert float(shown["total cost (EUR)"]) == pytest.approx(sum(counted[t] for t in tenants), rel=1e-3)
    assert all(counted[t] > 0 for t in tenants), counted  # both tenants' keys were used
    duration = float(shown["duration"].removesuffix(" s"))
    assert 0 < duration <= wall
    assert float(shown["requests/s"]) == pytest.approx(REQUESTS / duration, rel=0.01)

    memory = {name: float(end) * 1024 * 1024 for name, _, end in
              re.findall(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \| [+-][\d.]+ \|$", markdown, re.MULTILINE)}
    assert memory.keys() == services.keys()
    for name, end in memory.items():
        assert end == pytest.approx(rss[name], rel=0.2), name

    for plot in ("throughput.png", "latency.png", "cost.png"):
        assert (out / plot).read_bytes().startswith(PNG_SIGNATURE)
        assert f"]({plot})" in markdown


def test_load_without_keys_or_out_removes_its_tenants_and_writes_outside_the_checkout(stack: Stack, base_env, tmp_path):
    """No --key: the tenants load-1 and load-2 serve the run and are gone after it; no --out: the report goes to a
    folder of the run's own under ~/.cache/lynx/work/load/, nothing to the working directory (the checkout)."""
    home, cwd = tmp_path / "home", tmp_path / "checkout"
    cwd.mkdir()
    tenants_file = Path(base_env["LYNX_GATEWAY_TENANTS_FILE"])
    before = gateway_counts(stack, ["load-1", "load-2"])
    run = subprocess.run(
        [sys.executable, "-m", "lynx.cli", "load", "--url", stack.gateway.url, "--tenants", "2", "--requests", "4",
         "--concurrency", "2", "--max-tokens", "4",
         *(arg for p in stack.processes() for arg in ("--service", f"{p.name}={p.url}"))],
        env={**base_env, "HOME": str(home)}, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr

    (report,) = (home / ".cache" / "lynx" / "work" / "load").glob("*/report.md")
    assert int(figures(report.read_text())["requests"]) == 4
    assert list(cwd.iterdir()) == []
    spent = wait_for(lambda: (lambda after: after if all(after[t] > before[t] for t in ("load-1", "load-2")) else None)(
        gateway_counts(stack, ["load-1", "load-2"])), 10, "the gateway to charge both load tenants")
    assert spent  # the two tenants existed and were served during the run
    assert not {"load-1", "load-2"} & TenantRegistry(tenants_file).known_ids()
    assert stack.tenant in TenantRegistry(tenants_file).known_ids()  # the file's other tenants stay
