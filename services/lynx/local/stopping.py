"""The order and the grace with which a local run's processes stop (`lynx down`, the tests, the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from lynx.local.processes import ServiceProcess, stop_together

T = TypeVar("T")
# Above the services' own shutdown at its longest (lynx.service.shutdown, default settings: the 15 s drain and the 20 s
# final-scrape wait share 35 s, then up to 5 s to close).
STOP_GRACE_SECONDS = 45
# Stopped after the services (everything Prometheus scrapes: the budget loop and the auditor too), in this order,
# each phase with its own grace: Prometheus once the stopping processes have had their last scrape (lynx.service.shutdown
# waits for one, and would wait its whole stop for a Prometheus stopping beside it); the collector once the services
# have flushed their spans to it (it sends what it holds on its way out); Jaeger last, once the collector has
# handed it what it held (it writes them to badger and closes its files on SIGTERM).
LATER_PHASES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("prometheus",), STOP_GRACE_SECONDS), (("otelcol",), 10), (("jaeger",), 10))


def stop_grace(name: str) -> float:
    """Seconds between SIGTERM and SIGKILL for the process `lynx up` named ``name``."""
    return next((grace for names, grace in LATER_PHASES if name in names), STOP_GRACE_SECONDS)


def stop_phases(named: Iterable[tuple[str, T]]) -> list[tuple[list[T], float]]:
    """The processes of a run (``(name, pid or process)`` pairs), in the order they are stopped: phases whose
    processes stop together, each with its grace."""
    named = list(named)
    later = {name for names, _ in LATER_PHASES for name in names}
    return [([item for name, item in named if name not in later], STOP_GRACE_SECONDS),
            *(([item for name, item in named if name in names], grace) for names, grace in LATER_PHASES)]


def stop_processes(processes: Iterable[ServiceProcess]) -> None:
    """Stops processes started in this one (tests, benchmarks) as `lynx down` stops a run: phase by phase
    (``stop_phases``), each phase's processes together."""
    for phase, grace in stop_phases((process.name, process) for process in processes):
        stop_together(phase, grace)

