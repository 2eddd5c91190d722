"""The README's commands for real: `lynx down && scripts/up.sh`, twice, on the fixed ports, Tempo and Prometheus included."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from lynx.cli import STOP_GRACE_SECONDS, run_dir
from lynx.processes import KILL_WAIT_SECONDS

from .conftest import MODEL_NAME, required_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LYNX = REPO / ".venv" / "bin" / "lynx"
GATEWAY = "http://127.0.0.1:8080"
PORTS = {"gateway": 8080, "tempo": 3200}
UP_TIMEOUT_SECONDS = 600
DOWN_TIMEOUT_SECONDS = STOP_GRACE_SECONDS + KILL_WAIT_SECONDS + 30


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


def test_down_then_up_works_twice_and_down_leaves_nothing_running(tmp_path):
    required_binary("tempo", "scripts/build_tools.sh tempo")
    required_binary("prometheus", "apt-get install prometheus")
    # Everything else as a user has it; only the demo tenant's key goes to a file of the test's own.
    env = {**os.environ, "LYNX_GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.json")}
    assert lynx_down(env).returncode == 0
    try:
        for _ in range(2):
            up = run(["bash", str(REPO / "scripts" / "up.sh")], env, UP_TIMEOUT_SECONDS)
            assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
            printed_key = re.search(r"tenant 'demo' API key: (\S+)", up.stdout)
            assert printed_key, up.stdout
            key = printed_key.group(1)
            started = json.loads((run_dir() / "pids.json").read_text())
            assert {"tempo", "prometheus", "auditor", "tokenizer", "retriever", "decoder", "gateway"} <= started.keys()
            assert httpx.get(f"{GATEWAY}/readyz", timeout=10).status_code == 200
            answer = httpx.post(f"{GATEWAY}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                json={"model": MODEL_NAME, "temperature": 0, "max_tokens": 16,
                                      "messages": [{"role": "user", "content": "How do I define a function in Python?"}]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"]
            assert all(accepts_connections(port) for port in PORTS.values())

            down = lynx_down(env)
            assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
            for name, pid in started.items():
                assert (f"stopped {name} (pid {pid})" in down.stdout
                        or f"killed {name} (pid {pid}) with SIGKILL" in down.stderr), f"{down.stdout}\n{down.stderr}"
            # `lynx down` has returned, so all of it must be gone already: waiting here would hide the bug.
            assert live_groups(set(started.values())) == []
            assert [name for name, port in PORTS.items() if accepts_connections(port)] == []
            assert not (run_dir() / "pids.json").exists()
    finally:
        lynx_down(env)
