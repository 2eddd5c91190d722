"""One gateway, two decoder instances (LYNX_GATEWAY_DECODER_URLS), real processes: requests split by load, and a
decoder killed under load leaves the others serving, with every request charged what its client was told.

Each decoder's share is counted by the decoder itself (its own /metrics and /v1/load), never by the gateway.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lynx.contracts.decoder import DecoderLoad
from lynx.accounting.tenants import TenantRegistry
from lynx.local.processes import ServiceProcess, start_service, wait_ready
from lynx.local.stopping import stop_processes
from lynx.local.topology import models_environment
from lynx.retriever.settings import RetrieverSettings

from .conftest import MODEL_NAME, START_TIMEOUT_SECONDS, metric_value, wait_for
from .otlp_sink import OtlpSink
from .streaming import Told, stream_completion

CONCURRENT = 32
GENERATE = {"endpoint": "/v1/generate", "method": "POST"}


@dataclass
class TwoDecoders:
    gateway: ServiceProcess
    decoders: list[ServiceProcess]
    others: list[ServiceProcess]
    tenant: str
    key: str
    sink: OtlpSink

    def processes(self) -> list[ServiceProcess]:
        return [self.gateway, *self.decoders, *self.others]


@pytest.fixture(scope="module")
def two_decoders(models: Path, sink: OtlpSink, tmp_path_factory) -> Iterator[TwoDecoders]:
    work = tmp_path_factory.mktemp("two-decoders")
    env = {**os.environ, **models_environment(models),
           "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
           "LYNX_GATEWAY_TENANTS_FILE": str(work / "tenants.json"),
           "LYNX_GATEWAY_BUDGETS_FILE": str(work / "budgets.json"),
           "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    started: list[ServiceProcess] = []
    try:
        tokenizer = start_service("tokenizer", env, work / "tokenizer.log")
        retriever = start_service("retriever", env, work / "retriever.log")
        started += [tokenizer, retriever]
        # One thread each: two decoders share this machine's cores with everything else.
        decoders = [start_service("decoder", {**env, "LYNX_DECODER_THREADS": "1"}, work / f"decoder-{i}.log")
                    for i in range(2)]
        started += decoders
        wait_ready(started, START_TIMEOUT_SECONDS)
        # Probed at start (both are ready by then), then rarely: a decoder that dies is dropped by the calls that
        # find it dead, not by a probe.
        gateway = start_service("gateway", {
            **env, "LYNX_GATEWAY_TOKENIZER_URL": tokenizer.url, "LYNX_GATEWAY_RETRIEVER_URL": retriever.url,
            "LYNX_GATEWAY_DECODER_URLS": ",".join(d.url for d in decoders),
            "LYNX_GATEWAY_DECODER_PROBE_INTERVAL_SECONDS": "60"}, work / "gateway.log")
        started.append(gateway)
        wait_ready([gateway], START_TIMEOUT_SECONDS)
        wait_for(lambda: instances_ready(gateway) == 2, 30, "the gateway to find both decoders ready")
        tenant = f"tenant-{gateway.url.rsplit(':', 1)[1]}"
        key = TenantRegistry(work / "tenants.json").add(tenant)
        yield TwoDecoders(gateway, decoders, [tokenizer, retriever], tenant, key, sink)
    finally:
        stop_processes(started)


def scrape(service: ServiceProcess) -> str:
    return httpx.get(f"{service.url}/metrics", timeout=10).text


def instances_ready(gateway: ServiceProcess) -> float:
    return metric_value(scrape(gateway), "lynx_gateway_decoder_instances_ready")


def generate_requests(decoder: ServiceProcess) -> float:
    """Generate requests the decoder itself answered (its own counter)."""
    try:
        return metric_value(scrape(decoder), "lynx_request_total", GENERATE)
    except KeyError:
        return 0.0


def held(decoder: ServiceProcess) -> int:
    """Sequences the decoder holds now, as it says."""
    return DecoderLoad.model_validate_json(httpx.get(f"{decoder.url}/v1/load", timeout=10).content).sequences


def tenant_spend(stack: TwoDecoders) -> float:
    try:
        return metric_value(scrape(stack.gateway), "lynx_tenant_cost_eur_total", {"tenant": stack.tenant})
    except KeyError:
        return 0.0


def streams(stack: TwoDecoders, pool: ThreadPoolExecutor, count: int, content: str, max_tokens: int) -> list:
    return [pool.submit(stream_completion, stack.gateway.url, stack.key, f"{content} ({i})", max_tokens)
            for i in range(count)]


def test_concurrent_requests_split_evenly_between_two_decoders(two_decoders: TwoDecoders):
    stack = two_decoders
    before = [generate_requests(d) for d in stack.decoders]
    spend_before = tenant_spend(stack)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        told = [f.result() for f in streams(stack, pool, CONCURRENT, "Name a colour", 12)]
    assert all(t.completed for t in told), [t.error_code for t in told if not t.completed]
    served = wait_for(lambda: (lambda s: s if sum(s) == CONCURRENT else None)(
        [generate_requests(d) - b for d, b in zip(stack.decoders, before, strict=True)]),
        30, "both decoders to count every request")
    assert all(abs(count - CONCURRENT / 2) <= 2 for count in served), served
    assert tenant_spend(stack) - spend_before == pytest.approx(sum(t.cost for t in told), rel=1e-9)
    # The gateway asked each decoder its load many times meanwhile: not one trace of it, while the requests' spans
    # came through.
    wait_for(lambda: all(stack.sink.trace(t.trace_id) for t in told), 30, "the requests' spans")
    assert not [s for s in stack.sink.spans if "/v1/load" in s.name or "/v1/load" in str(s.attributes)]


def decoder_counter(decoder: ServiceProcess, name: str, labels: dict[str, str] | None = None) -> float:
    try:
        return metric_value(scrape(decoder), name, labels)
    except KeyError:
        return 0.0


def test_a_client_that_leaves_has_its_sequence_cancelled_on_the_instance_that_holds_it(two_decoders: TwoDecoders):
    stack = two_decoders
    wait_for(lambda: all(held(d) == 0 for d in stack.decoders), 60, "both decoders to be idle")
    counters = ("lynx_decoder_sequences_total", {"reason": "cancelled"}), ("lynx_decoder_unread_seconds_total", None)
    before = [[decoder_counter(d, *c) for c in counters] for d in stack.decoders]
    body = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 400, "stream": True, "retrieval_top_k": 0,
            "messages": [{"role": "user", "content": "Write a long story about a lynx and a fox."}]}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {stack.key}"}, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        (holder,) = [d for d in stack.decoders if held(d) == 1]  # the decoder's own word on who holds it
    wait_for(lambda: held(holder) == 0, 30, "the holder to end the sequence")
    after = [[decoder_counter(d, *c) for c in counters] for d in stack.decoders]
    for decoder, was, now in zip(stack.decoders, before, after, strict=True):
        cancelled = 1 if decoder is holder else 0
        # Cancelled through its cancel link, its final report read: nothing left unread, as with one decoder.
        assert (now[0] - was[0], now[1] - was[1]) == (cancelled, 0.0), decoder.name


def test_a_decoder_killed_under_load_takes_no_new_request_and_what_it_held_is_charged_as_failed(
        two_decoders: TwoDecoders):
    stack = two_decoders
    survivor, victim = stack.decoders
    victim_url = victim.url
    before = generate_requests(survivor)
    spend_before = tenant_spend(stack)
    load = CONCURRENT // 2  # fits both decoders' KV slots: every request is running when the victim dies
    with ThreadPoolExecutor(CONCURRENT) as pool:
        first = streams(stack, pool, load, "Write a long story about a lynx in the snow", 256)
        wait_for(lambda: held(survivor) + held(victim) == load, 60, f"the decoders to hold all {load} requests")
        assert not any(f.done() for f in first), "a request ended before the kill: the counts below would not add up"
        victim_held = held(victim)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        wait_for(lambda: sum(f.done() for f in first) == victim_held, 30,
                 "the clients of the victim's requests to be told they failed")
        # Still under load: the survivor's streams run on while the next requests come in.
        second = streams(stack, pool, load, "Name an animal", 8)
        told_first, told_second = [f.result() for f in first], [f.result() for f in second]

    failed = [t for t in told_first if not t.completed]
    assert len(failed) == victim_held > 0
    assert {t.error_code for t in failed} == {"upstream_unavailable"}
    assert all(t.completed for t in told_second), [t.error_code for t in told_second if not t.completed]
    # The survivor's own count: every request of the first round it held, and every one of the second.
    wait_for(lambda: generate_requests(survivor) - before == load - victim_held + load, 30,
             "the survivor to count the requests it served",
             explain=lambda: f"survivor served {generate_requests(survivor) - before}, victim held {victim_held}")
    # No request of the second round was even tried on the victim: the gateway's calls, as its spans recorded them.
    calls = wait_for(lambda: (lambda c: c if len(c) == load else None)(generate_calls(stack.sink, told_second)), 30,
                     "the gateway's decoder call span of every second-round request")
    assert all(url.startswith(survivor.url) for url in calls), calls
    assert not any(url.startswith(victim_url) for url in calls)
    assert instances_ready(stack.gateway) == 1
    # Every request charged once, what its client was told, the failed ones included.
    assert tenant_spend(stack) - spend_before == pytest.approx(sum(t.cost for t in told_first + told_second),
                                                                rel=1e-9)


def generate_calls(sink: OtlpSink, told: list[Told]) -> list[str]:
    """The decoder URL of each gateway client span that posted a generate request, in the traces of ``told``."""
    calls = []
    for t in told:
        for span in sink.trace(t.trace_id):
            url = str(span.attributes.get("url.full") or span.attributes.get("http.url") or "")
            if span.service.endswith("gateway") and url.endswith("/v1/generate"):
                calls.append(url)
    return calls
