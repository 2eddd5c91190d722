"""Starts lynx's four services as real processes, exporting spans to a real OTLP receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lynx.gateway.tenants import TenantRegistry
from lynx.models.cache import is_built, models_dir
from lynx.processes import ServiceProcess, start_service, wait_ready
from lynx.retriever.settings import RetrieverSettings

from .otlp_sink import OtlpSink

MODEL_NAME = "SmolLM2-135M-Instruct"
START_TIMEOUT_SECONDS = 120


@dataclass
class Stack:
    gateway: ServiceProcess
    tokenizer: ServiceProcess
    retriever: ServiceProcess
    decoder: ServiceProcess
    key: str
    sink: OtlpSink

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="session")
def models() -> Path:
    out = models_dir()
    if not is_built(out):
        pytest.fail(f"models are not built in {out}: run scripts/test.sh (it runs `lynx models build`)")
    return out


@pytest.fixture(scope="session")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def base_env(models: Path, sink: OtlpSink, tmp_path_factory) -> dict[str, str]:
    tenants = tmp_path_factory.mktemp("tenants") / "tenants.json"
    return {
        **os.environ,
        "LYNX_TOKENIZER_MODEL_DIR": str(models / "decoder"),
        "LYNX_DECODER_MODEL_DIR": str(models / "decoder"),
        "LYNX_RETRIEVER_EMBEDDER_DIR": str(models / "embedder"),
        "LYNX_RETRIEVER_INDEX_DIR": str(RetrieverSettings().index_dir),
        "LYNX_GATEWAY_TENANTS_FILE": str(tenants),
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def start_stack(env: dict[str, str], log_dir: Path, sink: OtlpSink, decoder_env: dict[str, str],
                gateway_env: dict[str, str]) -> Stack:
    tokenizer = start_service("tokenizer", env, log_dir / "tokenizer.log")
    retriever = start_service("retriever", env, log_dir / "retriever.log")
    decoder = start_service("decoder", {**env, **decoder_env}, log_dir / "decoder.log")
    gateway = start_service("gateway", {
        **env, **gateway_env, "LYNX_GATEWAY_TOKENIZER_URL": tokenizer.url,
        "LYNX_GATEWAY_RETRIEVER_URL": retriever.url, "LYNX_GATEWAY_DECODER_URL": decoder.url},
        log_dir / "gateway.log")
    stack = Stack(gateway, tokenizer, retriever, decoder, "", sink)
    services = [tokenizer, retriever, decoder, gateway]
    try:
        wait_ready(services, START_TIMEOUT_SECONDS)
    except Exception:
        for service in services:
            service.stop()
        raise
    stack.key = TenantRegistry(Path(env["LYNX_GATEWAY_TENANTS_FILE"])).add(f"tenant-{gateway.url[-5:]}")
    return stack


@pytest.fixture(scope="session")
def stack(base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """The default deployment: 8 slots, a roomy queue."""
    running = start_stack(base_env, tmp_path_factory.mktemp("logs"), sink, {}, {})
    yield running
    for service in (running.gateway, running.decoder, running.retriever, running.tokenizer):
        service.stop()


@pytest.fixture(scope="session")
def tight_stack(base_env, sink, tmp_path_factory) -> Iterator[Stack]:
    """One slot, one queue place and a 6-second deadline: for overload and deadline paths."""
    running = start_stack(base_env, tmp_path_factory.mktemp("tight-logs"), sink,
                          {"LYNX_DECODER_KV_SLOTS": "1", "LYNX_DECODER_QUEUE_CAPACITY": "1"},
                          {"LYNX_GATEWAY_REQUEST_DEADLINE_SECONDS": "6"})
    yield running
    for service in (running.gateway, running.decoder, running.retriever, running.tokenizer):
        service.stop()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a metric's samples whose labels include ``labels``, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
                found = True
    if not found:
        raise KeyError(f"{name}{labels or ''} not exported")
    return total
