"""`lynx tenant` (the real command line) on the tenants file a running gateway reads: a rotated or removed key is
refused at once, the new one served. A broken tenants file under a running gateway: its tenants are still served from
the last good copy, and its /metrics and log say the file is stale until it is repaired."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lynx.service.files import write_atomically
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.stopping import stop_processes

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, Stack, metric_value, wait_for

pytestmark = pytest.mark.integration
TINY = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 1, "retrieval_top_k": 0,
        "messages": [{"role": "user", "content": "Hi"}]}


def lynx_tenant(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lynx.cli", "tenant", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def completion_status(gateway: ServiceProcess, key: str) -> int:
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=TINY, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}).status_code


def status(stack: Stack, key: str) -> int:
    return completion_status(stack.gateway, key)


def test_rotate_and_remove_revoke_the_key_in_a_running_gateway(stack: Stack, base_env):
    old = lynx_tenant(base_env, "add", "rotating")
    assert status(stack, old) == 200
    assert lynx_tenant(base_env, "show", "rotating") == old
    new = lynx_tenant(base_env, "rotate", "rotating")
    assert new != old and lynx_tenant(base_env, "show", "rotating") == new
    assert (status(stack, old), status(stack, new)) == (401, 200)
    lynx_tenant(base_env, "remove", "rotating")
    assert status(stack, new) == 401
    assert status(stack, stack.key) == 200  # the file's other tenants are untouched


@pytest.fixture
def own_gateway(stack: Stack, base_env, tmp_path) -> Iterator[ServiceProcess]:
    """A gateway of its own, in front of the stack's services, reading a tenants file of its own: breaking it breaks
    no other test."""
    gateway = start_service("gateway", {
        **base_env, "LYNX_GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.json"),
        "LYNX_GATEWAY_TOKENIZER_URL": stack.tokenizer.url, "LYNX_GATEWAY_RETRIEVER_URL": stack.retriever.url,
        "LYNX_GATEWAY_DECODER_URL": stack.decoder.url}, tmp_path / "gateway.log")
    try:
        wait_ready([gateway], START_TIMEOUT_SECONDS)
        yield gateway
    finally:
        stop_processes([gateway])


def tenants_file_metric(gateway: ServiceProcess, name: str) -> float:
    return metric_value(httpx.get(f"{gateway.url}/metrics", timeout=10).text, name, {"file": "tenants"})


def unreadable_events(log: Path) -> list[dict]:
    """The gateway's ``watched_file_unreadable`` log events about its tenants file."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [e for e in events if e.get("event") == "watched_file_unreadable" and e.get("file") == "tenants"]


def test_a_broken_tenants_file_keeps_its_tenants_served_until_it_is_repaired(own_gateway: ServiceProcess, tmp_path):
    tenants_file, log = tmp_path / "tenants.json", tmp_path / "gateway.log"
    registry = TenantRegistry(tenants_file)
    key = registry.add("steady")
    assert completion_status(own_gateway, key) == 200
    assert tenants_file_metric(own_gateway, "lynx_watched_file_stale") == 0
    good = tenants_file.read_text()

    write_atomically(tenants_file, "{garbage")  # replaced whole by something that is not a tenants file
    assert [completion_status(own_gateway, key) for _ in range(2)] == [200, 200]
    assert tenants_file_metric(own_gateway, "lynx_watched_file_stale") == 1
    assert tenants_file_metric(own_gateway, "lynx_watched_file_unreadable_versions_total") == 1

    tenants_file.write_text(good[: len(good) // 2])  # truncated and half rewritten in place (same inode)
    assert completion_status(own_gateway, key) == 200
    assert tenants_file_metric(own_gateway, "lynx_watched_file_unreadable_versions_total") == 2
    assert tenants_file_metric(own_gateway, "lynx_watched_file_stale") == 1
    # Once per bad version, not once per request (three requests were served from the last good copy).
    events = wait_for(lambda: len(found := unreadable_events(log)) >= 2 and found, 10, "two unreadable events in "
                      f"{log}", explain=lambda: log.read_text()[-2000:])
    assert [e["error"] for e in events] == ["JSONDecodeError", "JSONDecodeError"]

    write_atomically(tenants_file, good)  # repaired
    newcomer = registry.add("newcomer")
    assert (completion_status(own_gateway, newcomer), completion_status(own_gateway, key)) == (200, 200)
    assert tenants_file_metric(own_gateway, "lynx_watched_file_stale") == 0
    assert len(unreadable_events(log)) == 2
