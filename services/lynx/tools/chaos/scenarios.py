"""The five scenarios, and how each one runs: steady load through the gateway (lynx.tools.load.driver), the disruption
part-way through it, the load on until the deployment has been whole again for a while, then the checks.

1. SIGKILL a tokenizer, retriever or decoder mid-load (on Kubernetes: its pod deleted with grace 0);
2. restart every service, the gateway last, gracefully (SIGTERM / pod deletion) while streams are open;
3. latency and errors injected into one leaf service for a while (only where fault injection is enabled);
4. the trace store (Jaeger, or a Tempo of the user's) stopped, then brought back;
5. Prometheus stopped, then brought back: a blocked tenant stays blocked throughout, and no charge is lost.

In scenarios 1 and 2 a "witness" stream is opened before each signal, late enough before it to be generating
(twice the time to first token seen so far) when it lands; its record joins the load's and is checked like the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TextIO

import httpx

from lynx.telemetry.tracestore import TraceStoreClient, TraceStoreKind
from lynx.tools.chaos import checks
from lynx.tools.chaos.checks import Check, classify
from lynx.tools.chaos.report import Progress
from lynx.tools.chaos.targets import READY_TIMEOUT_SECONDS, SERVICES, Disruption, Target, TargetError
from lynx.contracts.faults import FaultPlan
from lynx.tools.load.driver import LoadSpec, RequestRecord, drive, served_model
from lynx.telemetry.prometheus_api import PrometheusError
from lynx.service.polling import wait_for

WITNESS_PROMPT = "Write a long story about a lighthouse keeper and a storm."
WITNESS_LEAD_SECONDS = (0.5, 15.0)  # bounds of the time from sending the witness to the signal
BLOCKED_PROBE_SECONDS = 1.0
BLOCKED_CODE = "insufficient_quota"
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Durations:
    lead_s: float = 10.0  # load before the disruption
    tail_s: float = 15.0  # load once the deployment is whole again
    gap_s: float = 3.0  # scenario 2: load between one service's restart and the next
    fault_s: float = 30.0  # scenario 3: how long the faults stay
    trace_store_outage_s: float = 30.0  # scenario 4
    prometheus_outage_s: float = 30.0  # scenario 5
    trace_settle_s: float = 20.0  # age of the last trace before the trace store is read
    trace_wait_s: float = 60.0  # how long a trace that looks broken may take to become whole
    scrape_wait_s: float = 120.0  # how long Prometheus may take to scrape the counters after the load


@dataclass(frozen=True)
class Options:
    kill_service: str = "decoder"
    fault_service: str = "tokenizer"
    fault: FaultPlan = field(default_factory=lambda: FaultPlan(latency_seconds=0.2, error_rate=0.2))
    blocked_key: str | None = None
    witness_max_tokens: int = 128


@dataclass
class Chaos:
    """Everything the scenarios share."""

    target: Target
    load: LoadSpec  # duration_s is only a safety net: the scenario stops its load itself
    trace_store_url: str
    prometheus_url: str
    tenants: tuple[str, ...]  # the tenant ids of the load's keys: the cost counter's tenant label
    durations: Durations = field(default_factory=Durations)
    options: Options = field(default_factory=Options)
    progress: Progress = field(default_factory=Progress)
    records_file: TextIO | None = None  # one JSON line per request
    trace_store_kind: TraceStoreKind = "jaeger"


@dataclass
class Run:
    """One scenario under way."""

    number: int
    started_at: float
    disruptions: list[Disruption] = field(default_factory=list)
    answered: list[RequestRecord] = field(default_factory=list)  # as they come, the witnesses' included
    witnesses: list[RequestRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked_statuses: list[int | None] = field(default_factory=list)
    disrupted_at: float | None = None  # when the disruption began
    recovered_at: float | None = None  # when the target was whole again
    error: str | None = None


@dataclass(frozen=True)
class ScenarioResult:
    number: int
    title: str
    started_at: float
    ended_at: float
    records: list[RequestRecord]
    disruptions: list[Disruption]
    checks: list[Check]
    notes: list[str]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


Disrupt = Callable[[Chaos, Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    number: int
    title: str
    disrupt: Disrupt
    refusal: Callable[[Chaos], Awaitable[str | None]] | None = None  # why it cannot run here, if it cannot
    alongside: Disrupt | None = None  # runs for as long as the load does
    extra_checks: Callable[[Run, list[RequestRecord]], list[Check]] = lambda run, records: []


# -- what each scenario does ---------------------------------------------------------------------------------------

def record(chaos: Chaos, run: Run, request: RequestRecord) -> None:
    run.answered.append(request)
    chaos.progress.record(request)
    if chaos.records_file is not None:
        chaos.records_file.write(json.dumps({"scenario": run.number, **asdict(request)}) + "\n")
        chaos.records_file.flush()


async def witness(chaos: Chaos, run: Run) -> asyncio.Task:
    """A long stream, under way when this returns; its record joins the run's once it ends."""
    spec = replace(chaos.load, keys=chaos.load.keys[:1], concurrency=1, requests=1, duration_s=None,
                   stream_share=1.0, max_tokens=chaos.options.witness_max_tokens, prompt=WITNESS_PROMPT)

    async def stream() -> None:
        run.witnesses += await drive(spec, on_record=lambda r: record(chaos, run, r))

    task = asyncio.create_task(stream())
    first_tokens = sorted(r.ttft_s for r in run.answered if r.ttft_s is not None)
    typical = first_tokens[len(first_tokens) // 2] if first_tokens else 0.0
    shortest, longest = WITNESS_LEAD_SECONDS
    await asyncio.sleep(min(max(2 * typical, shortest), longest))
    return task


async def kill_a_service(chaos: Chaos, run: Run) -> None:
    service = chaos.options.kill_service
    streaming = await witness(chaos, run)
    chaos.progress.set_phase(f"SIGKILL {service}, waiting until it serves again")
    run.disruptions.append(await asyncio.to_thread(chaos.target.kill, service))
    await streaming


async def restart_every_service(chaos: Chaos, run: Run) -> None:
    for service in SERVICES:  # the gateway last
        streaming = await witness(chaos, run)
        chaos.progress.set_phase(f"restarting the {service} gracefully")
        run.disruptions += await asyncio.to_thread(chaos.target.restart, service)
        await streaming
        chaos.progress.set_phase("load")
        await asyncio.sleep(chaos.durations.gap_s)


async def faults_refused(chaos: Chaos) -> str | None:
    service = chaos.options.fault_service
    if await asyncio.to_thread(chaos.target.faults_enabled, service):
        return None
    return (f"fault injection is off on the {service}, as it is by default: run it with "
            f"LYNX_{service.upper()}_FAULTS_ENABLED=true (Helm: components.{service}.settings.FAULTS_ENABLED=\"true\") "
            "to allow scenario 3")


async def inject_faults(chaos: Chaos, run: Run) -> None:
    service, plan = chaos.options.fault_service, chaos.options.fault
    chaos.progress.set_phase(f"faults on the {service} for {chaos.durations.fault_s:g} s")
    await asyncio.to_thread(chaos.target.set_faults, service, plan)
    run.notes.append(f"faults on the {service}: {plan.model_dump()} for {chaos.durations.fault_s:g} s")
    try:
        await asyncio.sleep(chaos.durations.fault_s)
    finally:
        await asyncio.to_thread(chaos.target.set_faults, service, FaultPlan())


async def backend_outage(chaos: Chaos, run: Run, backend: str, seconds: float) -> None:
    chaos.progress.set_phase(f"stopping {backend}")
    run.disruptions.append(await asyncio.to_thread(chaos.target.stop_backend, backend))
    try:
        chaos.progress.set_phase(f"{backend} stopped for {seconds:g} s")
        await asyncio.sleep(seconds)
    finally:
        chaos.progress.set_phase(f"starting {backend}")
        run.disruptions.append(await asyncio.to_thread(chaos.target.start_backend, backend))


async def trace_store_outage(chaos: Chaos, run: Run) -> None:
    await backend_outage(chaos, run, "trace-store", chaos.durations.trace_store_outage_s)


async def prometheus_outage(chaos: Chaos, run: Run) -> None:
    await backend_outage(chaos, run, "prometheus", chaos.durations.prometheus_outage_s)


async def blocked_answer(chaos: Chaos) -> tuple[int | None, str]:
    """The status and error code a request of the blocked tenant gets."""
    headers = {"Authorization": f"Bearer {chaos.options.blocked_key}"}
    try:
        async with httpx.AsyncClient(base_url=chaos.load.base_url, timeout=30, headers=headers) as client:
            model = await served_model(client)
            response = await client.post("/v1/chat/completions", json={
                "model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hello"}]})
    except (httpx.HTTPError, RuntimeError) as error:  # RuntimeError: /v1/models refused the key
        return None, type(error).__name__
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = ""
    return response.status_code, code


async def blocked_refused(chaos: Chaos) -> str | None:
    if chaos.options.blocked_key is None:
        return ("it needs --blocked-key, the key of a tenant blocked at its daily cap (e.g. `lynx budget set T --cap "
                "0.000001`, one request of T, then wait for the budget controller to block it)")
    status, code = await blocked_answer(chaos)
    if status == 429 and code == BLOCKED_CODE:
        return None
    return f"the tenant of --blocked-key is not blocked: a request got {status} {code}".rstrip()


async def probe_blocked(chaos: Chaos, run: Run) -> None:
    while True:
        status, _ = await blocked_answer(chaos)
        run.blocked_statuses.append(status)
        await asyncio.sleep(BLOCKED_PROBE_SECONDS)


def generating(request: RequestRecord, moment: float) -> bool:
    """Whether ``request`` was a stream sending tokens at ``moment`` (its first one came before, its end after)."""
    return request.ttft_s is not None and request.started_at + request.ttft_s < moment < request.finished_at


def open_streams_check(run: Run, records: list[RequestRecord], complete: bool) -> Check:
    """Streams generating when a signal landed: each one answered, or with ``complete`` (a graceful stop), each one
    served to its end. (A request still before its first token may fail cleanly: the service it needed went.)"""
    moments = [d.at for d in run.disruptions if d.action in ("kill", "restart")]
    spanning = [r for r in records if any(generating(r, m) for m in moments)]
    wanted = ("ok",) if complete else ("ok", "error")
    bad = [r for r in spanning if classify(r) not in wanted]
    return Check("streams generating at the signal " + ("served to the end" if complete else "answered"),
                 f"{len(spanning) - len(bad)} of {len(spanning)}", ">= 1, all", bool(spanning) and not bad,
                 "; ".join(f"{r.outcome} {r.error_type} (trace {r.trace_id})" for r in bad[:3]))


SCENARIOS = {
    1: Scenario(1, "SIGKILL a leaf service mid-load", kill_a_service,
                extra_checks=lambda run, records: [open_streams_check(run, records, complete=False)]),
    2: Scenario(2, "graceful restart of every service while streams are open", restart_every_service,
                extra_checks=lambda run, records: [open_streams_check(run, records, complete=True),
                                                   checks.drain_check(run.disruptions)]),
    3: Scenario(3, "latency and errors injected into a leaf service", inject_faults, refusal=faults_refused),
    4: Scenario(4, "trace store stopped, then back", trace_store_outage),
    5: Scenario(5, "Prometheus stopped, then back", prometheus_outage, refusal=blocked_refused,
                alongside=probe_blocked,
                extra_checks=lambda run, records: [checks.blocked_check(run.blocked_statuses)]),
}


def gateway_ready(base_url: str, timeout: float) -> None:
    """Until the gateway's /readyz answers 200 where clients reach it (its Service may lag its pods); each try on a
    new connection, quickly given up: one caught by a pod that is gone can hang for a minute."""
    def answers_ready() -> bool:
        try:
            return httpx.get(f"{base_url}/readyz", timeout=PROBE_TIMEOUT_SECONDS).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers_ready, timeout, f"the gateway at {base_url} to be ready again after the disruption", interval=0.5,
             error=TargetError)


def title_of(scenario: Scenario, options: Options) -> str:
    if scenario.number == 1:
        return f"SIGKILL the {options.kill_service} mid-load"
    if scenario.number == 3:
        return f"latency and errors injected into the {options.fault_service}"
    return scenario.title


# -- running one -----------------------------------------------------------------------------------------------------

async def run_scenario(scenario: Scenario, chaos: Chaos) -> ScenarioResult:
    title = title_of(scenario, chaos.options)
    started = time.time()
    try:
        reason = await scenario.refusal(chaos) if scenario.refusal else None
    except (TargetError, httpx.HTTPError) as error:
        reason = f"its precondition could not be checked: {type(error).__name__}: {error}"
    if reason:
        return ScenarioResult(scenario.number, title, started, started, [], [], [], [], f"refused: {reason}")
    run = Run(scenario.number, started)
    progress = chaos.progress
    progress.begin(f"scenario {scenario.number}")
    stop = asyncio.Event()
    load = asyncio.create_task(drive(chaos.load, on_record=lambda r: record(chaos, run, r), stop=stop))
    helpers = [asyncio.create_task(progress.tick())]
    if scenario.alongside:
        helpers.append(asyncio.create_task(scenario.alongside(chaos, run)))
    try:
        await asyncio.sleep(chaos.durations.lead_s)
        run.disrupted_at = time.time()
        await scenario.disrupt(chaos, run)
        progress.set_phase("waiting until the gateway answers its clients again")
        await asyncio.to_thread(gateway_ready, chaos.load.base_url, READY_TIMEOUT_SECONDS)
        run.recovered_at = time.time()
        progress.set_phase("whole again")
        await asyncio.sleep(chaos.durations.tail_s)
    except (TargetError, httpx.HTTPError) as error:
        run.error = f"{type(error).__name__}: {error}"
    finally:
        stop.set()
        progress.set_phase("waiting for the requests under way")
        try:
            records = sorted([*await load, *run.witnesses], key=lambda r: r.started_at)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
    ended = time.time()
    found = await asyncio.to_thread(evaluate, scenario, chaos, run, records, ended)
    progress.end()
    return ScenarioResult(scenario.number, title, started, ended, records, run.disruptions, found, run.notes,
                          run.error)


def evaluate(scenario: Scenario, chaos: Chaos, run: Run, records: list[RequestRecord], ended: float) -> list[Check]:
    found = [checks.answered_check(records)]
    if run.recovered_at is not None:
        found.append(checks.recovered_check(records, run.disrupted_at, run.recovered_at))
    found += scenario.extra_checks(run, records)
    found += trace_checks(chaos, records, ended)
    found += counter_checks(chaos, run.started_at, records, ended)
    return found


def trace_checks(chaos: Chaos, records: Sequence[RequestRecord], ended: float) -> list[Check]:
    settle = ended + chaos.durations.trace_settle_s - time.time()
    if settle > 0:
        chaos.progress.set_phase(f"letting the last spans reach the trace store ({settle:.0f} s)")
        time.sleep(settle)
    chaos.progress.set_phase("reading every recorded trace from the trace store")
    store = TraceStoreClient(chaos.trace_store_url, chaos.trace_store_kind)
    try:
        audits = checks.read_traces(store, [r.trace_id for r in records if r.trace_id], chaos.durations.trace_wait_s)
    except httpx.HTTPError as error:
        return [Check("traces read from the trace store", f"{type(error).__name__}: {error}", "readable", False)]
    finally:
        store.close()
    return [checks.missing_traces_check(audits), checks.orphans_check(audits)]


def counter_checks(chaos: Chaos, started: float, records: Sequence[RequestRecord], ended: float) -> list[Check]:
    chaos.progress.set_phase("waiting for Prometheus to scrape the counters after the load")
    tenants = checks.label_matcher("tenant", chaos.tenants)
    url = chaos.prometheus_url
    # Every gateway exports the violation counters from its start (one series per reason): once each has a sample
    # newer than the load, so do the cost counters of every gateway still running.
    if not checks.await_scrape(url, checks.VIOLATIONS_FAMILY, ended, chaos.durations.scrape_wait_s):
        return [Check("counters scraped after the load", "no gateway scraped since the load ended",
                      f"within {chaos.durations.scrape_wait_s:g} s", False)]
    end = time.time()
    try:
        counted = checks.counter_increase(url, checks.COST_FAMILY, started, end, tenants)
        violations = checks.counter_increase(url, checks.VIOLATIONS_FAMILY, started, end)
    except PrometheusError as error:
        return [Check("counters read from Prometheus", str(error), "readable", False)]
    return [checks.cost_check(records, counted), checks.violations_check(violations)]
