"""From request records to the figures of a load run, and their Markdown. Pure: no clock, no network."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lynx.tools.load.driver import RequestRecord

MIB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolated linearly between the closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


@dataclass(frozen=True)
class MemoryChange:
    service: str
    start_bytes: float | None  # None: its /metrics could not be read
    end_bytes: float | None


@dataclass(frozen=True)
class Machine:
    """Where the run's client ran, and how busy it was (the 1-minute load average) as the run started and ended."""

    cores: int
    load_start: float
    load_end: float


@dataclass(frozen=True)
class ErrorCount:
    outcome: str
    error_type: str
    count: int


@dataclass(frozen=True)
class LoadReport:
    requests: int
    ok: int
    streamed: int
    duration_s: float
    requests_per_s: float
    output_tokens: int
    tokens_per_s: float
    latency_s: Percentiles
    ttft_s: Percentiles
    inter_token_s: Percentiles
    errors: tuple[ErrorCount, ...]
    cost_eur: float
    cost_per_1k_tokens_mean_eur: float | None
    cost_per_1k_tokens_p95_eur: float | None
    memory: tuple[MemoryChange, ...]
    machine: Machine | None


def errors_by_type(records: Iterable[RequestRecord]) -> tuple[ErrorCount, ...]:
    """Every request that did not end ok, counted by outcome and error type, the most frequent first."""
    counts = Counter((r.outcome, r.error_type or "unknown") for r in records if not r.ok)
    return tuple(ErrorCount(outcome, kind, n) for (outcome, kind), n in
                 sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def cost_per_1k_tokens(records: Iterable[RequestRecord]) -> list[float]:
    """EUR per 1,000 output tokens of each whole answer that has a cost and at least one token."""
    return [r.cost_eur / r.completion_tokens * 1000 for r in records
            if r.ok and r.cost_eur is not None and r.completion_tokens]


def summarize(records: Sequence[RequestRecord], duration_s: float, memory: Sequence[MemoryChange] = (),
              machine: Machine | None = None) -> LoadReport:
    """The figures of a run of ``duration_s`` seconds (the run's own wall time, from first request to last byte)."""
    output_tokens = sum(r.completion_tokens or 0 for r in records)
    per_1k = cost_per_1k_tokens(records)
    return LoadReport(
        requests=len(records), ok=sum(r.ok for r in records), streamed=sum(r.stream for r in records),
        duration_s=duration_s, requests_per_s=len(records) / duration_s if duration_s > 0 else 0.0,
        output_tokens=output_tokens, tokens_per_s=output_tokens / duration_s if duration_s > 0 else 0.0,
        latency_s=Percentiles.of([r.latency_s for r in records if r.ok]),
        ttft_s=Percentiles.of([r.ttft_s for r in records if r.ok and r.ttft_s is not None]),
        inter_token_s=Percentiles.of([gap for r in records if r.ok for gap in r.inter_token_s]),
        errors=errors_by_type(records), cost_eur=sum(r.cost_eur or 0.0 for r in records),
        cost_per_1k_tokens_mean_eur=sum(per_1k) / len(per_1k) if per_1k else None,
        cost_per_1k_tokens_p95_eur=percentile(per_1k, 95), memory=tuple(memory), machine=machine)


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def euros(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3e}"


def mebibytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.1f}"


def render_markdown(report: LoadReport, command: str, plots: Sequence[str] = ()) -> str:
    """The report as Markdown, the command that produced it first; ``plots`` are image paths relative to it."""
    r = report
    lines = [
        "# lynx load", "", "```sh", command, "```", "",
        "| figure | value |", "| --- | --- |",
        f"| requests | {r.requests} |",
        f"| ok | {r.ok} |",
        f"| streamed | {r.streamed} |",
        f"| duration | {r.duration_s:.1f} s |",
        f"| requests/s | {r.requests_per_s:.2f} |",
        f"| output tokens | {r.output_tokens} |",
        f"| output tokens/s | {r.tokens_per_s:.1f} |",
        f"| total cost (EUR) | {euros(r.cost_eur)} |",
        f"| cost per 1k output tokens, mean (EUR) | {euros(r.cost_per_1k_tokens_mean_eur)} |",
        f"| cost per 1k output tokens, p95 (EUR) | {euros(r.cost_per_1k_tokens_p95_eur)} |",
        *([f"| client machine | {r.machine.cores} cores, load average {r.machine.load_start:.1f} at the start, "
           f"{r.machine.load_end:.1f} at the end |"] if r.machine else []),
        "", "Latencies of the requests that ended ok (TTFT and inter-token latency: streams only, as the client saw "
        "them):", "",
        "| | p50 | p95 | p99 |", "| --- | --- | --- | --- |",
        *(f"| {name} | {seconds(p.p50)} | {seconds(p.p95)} | {seconds(p.p99)} |" for name, p in
          (("latency", r.latency_s), ("time to first token", r.ttft_s), ("inter-token latency", r.inter_token_s))),
        "", "## Errors", "",
    ]
    if r.errors:
        lines += ["| outcome | type | requests |", "| --- | --- | --- |",
                  *(f"| {e.outcome} | {e.error_type} | {e.count} |" for e in r.errors)]
    else:
        lines.append("None: every request ended ok.")
    lines += ["", "## Memory (RSS, MiB, from each service's /metrics)", ""]
    if r.memory:
        lines += ["| service | start | end | change |", "| --- | --- | --- | --- |"]
        for m in r.memory:
            change = (f"{(m.end_bytes - m.start_bytes) / MIB:+.1f}"
                      if m.start_bytes is not None and m.end_bytes is not None else "n/a")
            lines.append(f"| {m.service} | {mebibytes(m.start_bytes)} | {mebibytes(m.end_bytes)} | {change} |")
    else:
        lines.append("Not measured.")
    if plots:
        lines += ["", "## Over time", "", *(f"![{path.rsplit('.', 1)[0]}]({path})" for path in plots)]
    return "\n".join(lines) + "\n"
