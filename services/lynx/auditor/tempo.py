"""A small client for Tempo's HTTP API: recent trace ids, and a trace by id as OTLP JSON."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    service: str
    linked_span_ids: tuple[str, ...] = ()
    attributes: dict = field(default_factory=dict, hash=False, compare=False)


def hex_id(value: str) -> str:
    """Tempo's OTLP JSON writes ids as base64 (protobuf JSON) or hex depending on version."""
    if not value:
        return ""
    if all(c in "0123456789abcdefABCDEF" for c in value) and len(value) in (16, 32):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value.lower()


def attribute_value(value: dict):
    """One OTLP JSON AnyValue as Python (int64 values are strings in JSON)."""
    if "arrayValue" in value:
        return [attribute_value(v) for v in value["arrayValue"].get("values", [])]
    for key, convert in (("stringValue", str), ("boolValue", bool), ("intValue", int), ("doubleValue", float)):
        if key in value:
            return convert(value[key])
    return None


def spans_from_otlp_json(document: dict) -> list[StoredSpan]:
    """Every span of an OTLP JSON trace (``batches`` or ``resourceSpans``, either scope key)."""
    trace = document.get("trace", document)
    spans = []
    for resource_spans in trace.get("batches") or trace.get("resourceSpans") or []:
        attributes = resource_spans.get("resource", {}).get("attributes", [])
        service = next((a["value"].get("stringValue", "") for a in attributes if a.get("key") == "service.name"), "")
        scopes = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for span in scope.get("spans", []):
                spans.append(StoredSpan(
                    trace_id=hex_id(span.get("traceId", "")), span_id=hex_id(span.get("spanId", "")),
                    parent_span_id=hex_id(span.get("parentSpanId", "")), name=span.get("name", ""),
                    service=service,
                    linked_span_ids=tuple(hex_id(link.get("spanId", "")) for link in span.get("links", [])),
                    attributes={a["key"]: attribute_value(a.get("value", {})) for a in span.get("attributes", [])}))
    return spans


class TempoClient:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def ready(self) -> bool:
        try:
            return self.http.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def recent_trace_ids(self, start: float, end: float, limit: int = 500) -> list[str]:
        """Ids of traces that started in [start, end] (unix seconds)."""
        response = self.http.get("/api/search", params={"start": int(start), "end": int(end) + 1, "limit": limit})
        response.raise_for_status()
        return [hex_id(t["traceID"]).rjust(32, "0") for t in response.json().get("traces", [])]

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """The trace's spans; empty if Tempo does not know it."""
        response = self.http.get(f"/api/traces/{trace_id}", headers={"Accept": "application/json"})
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return spans_from_otlp_json(response.json())

    def close(self) -> None:
        self.http.close()
