#!/usr/bin/env python3
"""Admission by deadline: the share of admitted requests that finish within their deadline at 1x, 2x and 4x the
decoder's capacity, with the decoder's admission by deadline off (before issue 19) and on, side by side.

Starts two deployments of the four services on free ports, alike but for `LYNX_DECODER_ADMIT_BY_DEADLINE` (false:
"before", a request waits for a slot however long the queue; true: "after", lynx.decoder.admission), with the
decoder's default 8 slots and queue of 32. Then:

1. capacity: one client per KV slot sends `lynx load`'s chat completions (retrieval on, `max_tokens` 64, half
   streamed) back to back for --capacity-seconds to the "before" deployment, through a gateway whose deadline no
   request reaches; the throughput while every client was busy is the capacity (no queue forms, so it is the same
   for both arms), and the median latency the time a sequence takes in a full batch.
2. a second gateway in front of each deployment's services, with the request deadline at --deadline-seconds, or by
   default --deadline-latencies times that median latency: what matters is how the deadline compares with a
   sequence's time, which on a shared machine varies from run to run (a full queue, 32 behind 8 slots, waits about
   4 of them). The "after" one is warmed up.
3. for each multiple of the capacity: --seconds of Poisson arrivals at that rate (seeded: the same arrivals for both
   arms), each request sent when its time comes whatever is under way, to "before", then to "after"; every request of
   a run ends (answered, refused, or at its deadline) before the next run starts.

A request is admitted unless it was refused at once (503 `queue_full` or `queue_wait_exceeds_deadline`). An admitted
one finished within its deadline when its answer is whole (`finish_reason` stop or length); it missed it when its
answer was cut short (`finish_reason` deadline) or it got 504 `deadline_exceeded`. Reported per run, from the
clients' records: those counts, the share in time, answers in time per second of the run (goodput), and latencies.

Usage: .venv/bin/python scripts/bench_admission.py [--deadline-latencies 2.5 | --deadline-seconds S] [--seconds 120]
       [--capacity-seconds 150] [--multiples 1 2 4] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from bench_common import (
    LEAVES, MAX_TOKENS, REQUEST_TIMEOUT_SECONDS, START_TIMEOUT_SECONDS, TRACING_OFF, arrival_offsets, at_offsets,
    bench_environment, load_average, load_spec, machine, measure_and_publish, running, saturate, start_gateway,
    start_plain, warm_up,
)
from lynx.contracts.decoder import QUEUE_FULL, QUEUE_WAIT_EXCEEDS_DEADLINE
from lynx.decoder.settings import DecoderSettings
from lynx.tools.load.driver import RequestRecord, served_model
from lynx.tools.load.report import Percentiles
from lynx.local.processes import wait_ready

SECTION_HEADING = "## Admission by deadline: admitted work that finishes in time"
ARMS = {"before": "false", "after": "true"}  # LYNX_DECODER_ADMIT_BY_DEADLINE
UNREACHED_DEADLINE_SECONDS = 900  # the capacity run's gateway: every request ends on its own
REFUSED_AT_ONCE = (QUEUE_FULL, QUEUE_WAIT_EXCEEDS_DEADLINE)


@dataclass(frozen=True)
class Run:
    """One arm at one multiple of the capacity, from the clients' records."""

    arm: str
    multiple: float
    seconds: float
    records: list[RequestRecord]

    def refused(self, code: str) -> list[RequestRecord]:
        return [r for r in self.records if r.status == 503 and r.error_type == code]

    @property
    def refused_at_once(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status == 503 and r.error_type in REFUSED_AT_ONCE]

    @property
    def admitted(self) -> list[RequestRecord]:
        return [r for r in self.records if not (r.status == 503 and r.error_type in REFUSED_AT_ONCE)]

    @property
    def in_time(self) -> list[RequestRecord]:
        return [r for r in self.admitted if r.ok and r.finish_reason in ("stop", "length")]

    @property
    def cut_short(self) -> list[RequestRecord]:
        return [r for r in self.admitted if r.ok and r.finish_reason == "deadline"]

    @property
    def timed_out(self) -> list[RequestRecord]:
        return [r for r in self.admitted if r.status == 504]

    @property
    def other_failures(self) -> int:
        return len(self.admitted) - len(self.in_time) - len(self.cut_short) - len(self.timed_out)

    @property
    def share_in_time(self) -> float | None:
        return len(self.in_time) / len(self.admitted) if self.admitted else None


def deadline_env(seconds: float) -> dict[str, str]:
    return {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": f"{seconds:.0f}"}


async def arrivals(url: str, key: str, offsets: list[float]) -> list[RequestRecord]:
    spec = load_spec(url, key, concurrency=1, requests=len(offsets))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=spec.base_url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as client:
        model = await served_model(client, spec.keys[0])
        return await at_offsets(client, spec, model, offsets, time.monotonic())


def measure(args: argparse.Namespace) -> dict:
    load_before = load_average()
    with running() as processes, tempfile.TemporaryDirectory(prefix="lynx-bench-admission-") as tmp:
        envs, deployments = {}, {}
        for arm, admit in ARMS.items():
            work = Path(tmp) / arm
            work.mkdir()
            envs[arm] = bench_environment(work, **TRACING_OFF, LYNX_DECODER_ADMIT_BY_DEADLINE=admit)
            deployments[arm] = start_plain(processes, {**envs[arm], **deadline_env(UNREACHED_DEADLINE_SECONDS)}, work)
        before = deployments["before"]
        print(f"capacity: {args.slots} clients for {args.capacity_seconds:g} s", flush=True)
        capacity = saturate(load_spec(before.gateway_url, before.key, args.slots, seconds=args.capacity_seconds),
                            {})
        deadline = args.deadline_seconds or round(args.deadline_latencies * capacity.report.latency_s.p50)
        print(f"capacity {capacity.requests_per_s:.3f} requests/s, latency p50 {capacity.report.latency_s.p50:.1f} s: "
              f"deadline {deadline:.0f} s", flush=True)
        gateways = {arm: start_gateway(processes, {**envs[arm], **deadline_env(deadline)},
                                       {name: d.services[name] for name in LEAVES}, Path(tmp) / arm / "gateway.log")
                    for arm, d in deployments.items()}
        wait_ready(list(gateways.values()), START_TIMEOUT_SECONDS)
        warm_up(gateways["after"].url, deployments["after"].key)
        runs: list[Run] = []
        for index, multiple in enumerate(args.multiples):
            offsets = arrival_offsets(multiple * capacity.requests_per_s, args.seconds, args.seed + index)
            for arm, gateway in gateways.items():
                print(f"{multiple:g}x capacity, {arm}: {len(offsets)} requests over {args.seconds:g} s", flush=True)
                records = asyncio.run(arrivals(gateway.url, deployments[arm].key, offsets))
                runs.append(Run(arm, multiple, args.seconds, records))
                print("  " + row(runs[-1]), flush=True)
    return {"capacity": capacity, "deadline": deadline, "runs": runs, "load": (load_before, load_average()),
            "date": datetime.now().astimezone().strftime("%Y-%m-%d")}


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def row(run: Run) -> str:
    admitted, share = run.admitted, run.share_in_time
    in_time = Percentiles.of([r.latency_s for r in run.in_time])
    refused = Percentiles.of([r.latency_s for r in run.refused_at_once])
    return " | ".join([
        f"{run.multiple:g}x", run.arm, str(len(run.records)), str(len(run.refused(QUEUE_WAIT_EXCEEDS_DEADLINE))),
        str(len(run.refused(QUEUE_FULL))), str(len(admitted)), str(len(run.in_time)), str(len(run.cut_short)),
        str(len(run.timed_out)), str(run.other_failures), "-" if share is None else f"**{share:.0%}**",
        f"{len(run.in_time) / run.seconds:.2f}", f"{seconds(in_time.p50)}, {seconds(in_time.p95)}",
        seconds(refused.p95)])


def deadline_origin(args: argparse.Namespace) -> str:
    if args.deadline_seconds:
        return "--deadline-seconds"
    return f"{args.deadline_latencies:g} x that latency"


def render(args: argparse.Namespace, result: dict) -> str:
    capacity = result["capacity"]
    load_before, load_after = result["load"]
    slots = DecoderSettings().kv_slots
    lines = [
        SECTION_HEADING, "",
        f"Produced by `{args.command}` on {machine()} on {result['date']} (load average {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end: the machine was shared), onnxruntime with 2 intra-op threads. Two deployments "
        f"of the four services on free ports, alike (the decoder's {slots} KV slots and queue of "
        f"{DecoderSettings().queue_capacity}, tracing off) but for `LYNX_DECODER_ADMIT_BY_DEADLINE`: false in "
        "**before** (a request waits for a slot however long the queue, as until issue 19), true in **after** "
        "(lynx.decoder.admission).", "",
        f"Capacity: {args.slots} clients, one per slot, sent `lynx load`'s chat completions (retrieval on, "
        f"`max_tokens` {MAX_TOKENS}, half streamed) back to back for {args.capacity_seconds:g} s: "
        f"**{capacity.requests_per_s:.2f} requests/s** while every client was busy "
        f"({capacity.report.ok} answered, latency p50 {seconds(capacity.report.latency_s.p50)}: a sequence's time "
        f"in a full batch). The request deadline: **{result['deadline']:.0f} s** ({deadline_origin(args)}), so a "
        f"full queue ({DecoderSettings().queue_capacity} behind {slots} slots) waits longer than it. Then, for each "
        f"multiple of the capacity, {args.seconds:g} s of Poisson arrivals at that rate (the same arrivals for both "
        "arms), before first, then after.", "",
        "Admitted: not refused at once (503 `queue_full` or `queue_wait_exceeds_deadline`). In time: a whole answer "
        "(`finish_reason` stop or length). Cut short: `finish_reason` deadline. 504: `deadline_exceeded`, it waited "
        "for a slot until its deadline. In time/s: answers in time per second of arrivals (goodput). Latencies from "
        "the clients' clocks.", "",
        "| load | arm | sent | refused: wait past deadline | refused: queue full | admitted | in time | cut short "
        "| 504 | other failures | in time / admitted | in time/s | latency in time p50, p95 | refusal p95 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {row(run)} |" for run in result["runs"]), "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline-latencies", type=float, default=2.5,
                        help="the request deadline, in median latencies at capacity")
    parser.add_argument("--deadline-seconds", type=float, help="the request deadline, given (instead)")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long each run sends")
    parser.add_argument("--capacity-seconds", type=float, default=150.0, help="how long the capacity run sends")
    parser.add_argument("--multiples", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="arrival rates, as multiples of the capacity")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--output", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args()
    args.slots = DecoderSettings().kv_slots
    if not (1 <= (args.deadline_seconds or 1) <= 600 and 1 <= args.deadline_latencies <= 10
            and 0 < args.seconds <= 900 and 0 < args.capacity_seconds <= 600 and all(0 < m <= 8 for m in args.multiples)):
        parser.error("keep it bounded: a deadline of 1-600 s or 1-10 latencies, runs of at most 900 s, a capacity run "
                     "of at most 600 s, multiples of the capacity up to 8")
    measure_and_publish("bench_admission.py", args, SECTION_HEADING, measure, render)


if __name__ == "__main__":
    main()
