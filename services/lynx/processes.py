"""Starting lynx services as separate local processes (used by `lynx up`, the tests and the benchmarks)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    url: str
    process: subprocess.Popen
    log: Path
    ready_path: str = "/readyz"

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_process(name: str, argv: list[str], env: dict[str, str], log: Path, url: str,
                  ready_path: str = "/readyz", detached: bool = False) -> ServiceProcess:
    """Any server process, its output appended to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=detached)
    return ServiceProcess(name, url, process, log, ready_path)


def start_service(name: str, env: dict[str, str], log: Path, port: int | None = None,
                  detached: bool = False) -> ServiceProcess:
    """`lynx serve NAME` in a new process."""
    port = port or free_port()
    return start_process(name, [sys.executable, "-m", "lynx.cli", "serve", name],
                         {**env, f"LYNX_{name.upper()}_PORT": str(port)}, log, f"http://127.0.0.1:{port}",
                         detached=detached)


def wait_ready(services: list[ServiceProcess], timeout: float) -> None:
    """Until every service's readiness path answers 200; fails early, with its log, if one exits."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending and time.monotonic() < deadline:
        for service in list(pending):
            if service.process.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {service.name} service exited with {service.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{service.url}{service.ready_path}", timeout=2).status_code == 200:
                    pending.remove(service)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    if pending:
        raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(s.name for s in pending)}")
