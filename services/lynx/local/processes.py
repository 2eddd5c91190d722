"""Starting lynx services as separate local processes (used by `lynx up`, the tests and the benchmarks)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from lynx.service.polling import wait_for

KILL_WAIT_SECONDS = 10  # SIGKILL cannot be caught: only a process stuck in the kernel outlives this
EXIT_POLL_SECONDS = 0.1

Ending = Literal["not running", "stopped", "killed"]


# Where free ports are looked for: above every fixed port lynx and its tools use (Jaeger's 16686 the highest), below
# the kernel's ephemeral range (Linux's default is 32768-60999). A port the kernel hands out for bind(0) is in that
# range, so any outgoing connection made before the server binds it can take it as its local port (seen: the
# collector's receiver refused "address already in use" in a whole-suite run).
FREE_PORTS = range(20000, 32768)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _candidate_ports() -> range:
    try:
        ephemeral_start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = FREE_PORTS.stop
    return range(FREE_PORTS.start, max(FREE_PORTS.start, min(FREE_PORTS.stop, ephemeral_start)))


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on now, outside the ephemeral range (the kernel's choice inside it when that range
    leaves no room), not handed out before by this process."""
    candidates = _candidate_ports()
    for port in random.sample(candidates, len(candidates)):
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
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
        stop_together([self], timeout)


def stop_together(processes: Iterable[ServiceProcess], grace_seconds: float) -> None:
    """SIGTERM every process at once, then wait for them all; SIGKILL those still running ``grace_seconds`` later.
    Stopping one after the other would add their stops up (a lynx service's takes seconds: lynx.service.shutdown)."""
    running = [p.process for p in processes if p.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_WAIT_SECONDS)


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
    pending = list(services)

    def all_ready() -> bool:
        for service in list(pending):
            if service.process.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {service.name} service exited with {service.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{service.url}{service.ready_path}", timeout=2).status_code == 200:
                    pending.remove(service)
            except httpx.HTTPError:
                pass
        return not pending

    wait_for(all_ready, timeout, f"{', '.join(s.name for s in services)} to be ready", interval=0.3,
             explain=lambda: f"not ready: {', '.join(s.name for s in pending)}", error=RuntimeError)


def running_groups(pgids: Iterable[int]) -> set[int]:
    """Those of ``pgids`` that still have a live process. A zombie counts as gone: it holds no port or file, and
    a group whose processes are no longer our children (the usual case after `lynx up` exits) cannot be waited on."""
    wanted, running = set(pgids), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)", where comm may hold ")"
        except (OSError, IndexError):
            continue  # it exited while we were looking
        state, pgid = fields[0], int(fields[2])
        if pgid in wanted and state not in ("Z", "X"):
            running.add(pgid)
    return running


def signal_group(pgid: int, signum: signal.Signals) -> bool:
    """Whether the group still existed to receive ``signum``."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def await_exit(pgids: set[int], timeout: float) -> Iterator[int]:
    """Yields each group as its last process exits, until all have or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    pending = set(pgids)
    while pending:
        for pgid in sorted(pending - running_groups(pending)):
            pending.discard(pgid)
            yield pgid
        if not pending or time.monotonic() >= deadline:
            return
        time.sleep(EXIT_POLL_SECONDS)


def stop_groups(pgids: Iterable[int], grace_seconds: float) -> Iterator[tuple[int, Ending]]:
    """SIGTERM every process group, then yield ``(pgid, how it ended)`` as each one's last process exits; groups still
    running ``grace_seconds`` later get SIGKILL. Raises RuntimeError naming any group that outlives even that."""
    pending = set()
    for pgid in pgids:
        if signal_group(pgid, signal.SIGTERM):
            pending.add(pgid)
        else:
            yield pgid, "not running"
    for pgid in await_exit(pending, grace_seconds):
        pending.discard(pgid)
        yield pgid, "stopped"
    for pgid in [p for p in pending if not signal_group(p, signal.SIGKILL)]:
        pending.discard(pgid)  # its last process exited just now
        yield pgid, "stopped"
    for pgid in await_exit(pending, KILL_WAIT_SECONDS):
        pending.discard(pgid)
        yield pgid, "killed"
    if pending:
        raise RuntimeError(f"process groups {sorted(pending)} still running {KILL_WAIT_SECONDS} s after SIGKILL")
