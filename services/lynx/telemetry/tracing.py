"""OpenTelemetry tracing: one TracerProvider per app, configured by the standard OTEL_* variables.

With no OTLP endpoint configured nothing is exported and nothing errors; spans still
carry trace ids so logs and responses can name them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import httpx
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler, TraceIdRatioBased
from opentelemetry.trace import Span, format_span_id, format_trace_id

from lynx.telemetry.metrics import trace_sampler_ratio
from lynx.telemetry.request_id import forward_request_id

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Polled, not served: no span (each would be a trace of its own) and no log line. /v1/load is the decoder's load,
# which every gateway asks each instance every second (lynx.gateway.decoder_pool).
PROBE_PATHS = ("/healthz", "/readyz", "/metrics", "/v1/load")
UNINSTRUMENTED_PATHS = ",".join(path.lstrip("/") for path in PROBE_PATHS)
# The export thread holds the GIL while it encodes a batch, and the event loop waits that long: batches of 64 spans
# instead of the SDK's 512 halved the gateway's fast-path p99 at the same requests/s (docs/BENCHMARKS.md, Capacity).
EXPORT_BATCH_SPANS = 64
_BATCH_SIZE_VARIABLE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"


def otlp_export_enabled(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """True when the standard variables name an endpoint and do not switch traces off."""
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name) for name in _ENDPOINT_VARIABLES)


def export_batch_size(environ: os._Environ[str] | dict[str, str] = os.environ) -> int | None:
    """lynx's batch size, or None where OTEL_BSP_MAX_EXPORT_BATCH_SIZE is set (the SDK then reads it)."""
    return None if environ.get(_BATCH_SIZE_VARIABLE) else EXPORT_BATCH_SPANS


def sdk_disabled(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    """OTEL_SDK_DISABLED as the SDK reads it: its tracers then make no spans at all, whatever the sampler."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class SamplerSetting(NamedTuple):
    """A sampler as OTEL_TRACES_SAMPLER names it, and the share of new traces it keeps (its argument, for ratios)."""

    name: str
    ratio: float


def sampler_setting(sampler: Sampler, disabled: bool = False) -> SamplerSetting:
    """What ``sampler`` (the SDK's, built from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG) keeps of new traces:
    read from the sampler the provider runs, so that an unknown name or a bad argument shows as the SDK's fallback."""
    if disabled:
        return SamplerSetting("disabled", 0.0)
    if isinstance(sampler, ParentBased):
        root = sampler_setting(sampler._root)  # the SDK keeps the root (the decision for new traces) private
        return SamplerSetting(f"parentbased_{root.name}", root.ratio)
    if isinstance(sampler, TraceIdRatioBased):
        return SamplerSetting("traceidratio", sampler.rate)
    if isinstance(sampler, StaticSampler):
        kept = sampler.should_sample(None, 0, "").decision is Decision.RECORD_AND_SAMPLE
        return SamplerSetting("always_on" if kept else "always_off", 1.0 if kept else 0.0)
    return SamplerSetting("unknown", float("nan"))


def create_tracer_provider(service_name: str) -> TracerProvider:
    """A provider for one service; OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_* still apply.
    Its sampler is exported as lynx_trace_sampler_ratio: dashboards state the rate in force, not an assumed one."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if otlp_export_enabled():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=export_batch_size()))
    setting = sampler_setting(provider.sampler, sdk_disabled())
    gauge = trace_sampler_ratio()
    gauge.clear()  # one sampler per process: the latest provider's
    gauge.labels(setting.name).set(setting.ratio)
    return provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """Server spans for every route except the probes; joins an incoming traceparent."""
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNINSTRUMENTED_PATHS,
        exclude_spans=["send", "receive"],
    )


def instrumented_client(provider: TracerProvider, base_url: str, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """An HTTP client whose requests carry traceparent and the request id, and make client spans."""
    client = httpx.AsyncClient(base_url=base_url, timeout=timeout, event_hooks={"request": [forward_request_id]})
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    return client


def trace_ids(span: Span) -> tuple[str, str]:
    """(trace_id, span_id) as lowercase hex, empty when the span is not recording a valid context."""
    context = span.get_span_context()
    if not context.is_valid:
        return "", ""
    return format_trace_id(context.trace_id), format_span_id(context.span_id)
