"""One client for the trace store: recent trace ids, and a trace by id, parsed from OTLP JSON in one place.

Jaeger v2 (the default, lynx's own trace store) answers its API v3; Tempo (an opt-in for users who run it
themselves) its HTTP API. Both return a trace as OTLP JSON: ``spans_from_otlp_json`` reads either layout.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx

TraceStoreKind = Literal["jaeger", "tempo"]
DEFAULT_TRACE_STORE_URL = "http://127.0.0.1:16686"  # `lynx up`'s Jaeger, its query port
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    service: str
    linked_span_ids: tuple[str, ...] = ()
    attributes: dict = field(default_factory=dict, hash=False, compare=False)
    start_unix_nano: int = 0  # 0: not known
    end_unix_nano: int = 0  # 0: not known


def hex_id(value: str) -> str:
    """An id as lower-case hex: OTLP JSON writes them as hex (the OTLP spec, Jaeger) or as base64 (protobuf's JSON
    mapping, some Tempo versions)."""
    if not value:
        return ""
    if len(value) in (16, 32) and set(value) <= HEX_DIGITS:
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


def resource_spans(document: dict) -> list[dict]:
    """The resource spans of any of the stores' envelopes: Jaeger's ``{"result": {"resourceSpans"}}``, Tempo's
    ``{"batches"}`` or ``{"trace": {"resourceSpans"}}``, or a bare OTLP ``{"resourceSpans"}``."""
    body = document.get("result") or document.get("trace") or document
    return body.get("resourceSpans") or body.get("batches") or []


def spans_from_otlp_json(document: dict) -> list[StoredSpan]:
    """Every span of an OTLP JSON document, as stored (parents as written: nothing is repaired)."""
    spans = []
    for resource in resource_spans(document):
        attributes = resource.get("resource", {}).get("attributes", [])
        service = next((a["value"].get("stringValue", "") for a in attributes if a.get("key") == "service.name"), "")
        for scope in resource.get("scopeSpans") or resource.get("instrumentationLibrarySpans") or []:
            for span in scope.get("spans", []):
                spans.append(StoredSpan(
                    trace_id=hex_id(span.get("traceId", "")), span_id=hex_id(span.get("spanId", "")),
                    parent_span_id=hex_id(span.get("parentSpanId", "")), name=span.get("name", ""),
                    service=service,
                    linked_span_ids=tuple(hex_id(link.get("spanId", "")) for link in span.get("links", [])),
                    attributes={a["key"]: attribute_value(a.get("value", {})) for a in span.get("attributes", [])},
                    start_unix_nano=int(span.get("startTimeUnixNano") or 0),
                    end_unix_nano=int(span.get("endTimeUnixNano") or 0)))
    return spans


def rfc3339(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat().replace("+00:00", "Z")


class TraceStoreClient:
    """Reads traces from Jaeger's API v3 (``kind="jaeger"``, its query port, 16686) or Tempo's HTTP API
    (``kind="tempo"``, port 3200). Traces come back raw: a span whose parent never arrived keeps its parent id."""

    def __init__(self, base_url: str, kind: TraceStoreKind = "jaeger", timeout: float = 10.0) -> None:
        if kind not in ("jaeger", "tempo"):
            raise ValueError(f"unknown trace store kind {kind!r}: jaeger or tempo")
        self.kind = kind
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def ready(self) -> bool:
        """Whether the store answers queries (Jaeger: its service list, read from storage; Tempo: /ready)."""
        path = "/api/v3/services" if self.kind == "jaeger" else "/ready"
        try:
            return self.http.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def recent_trace_ids(self, start: float, end: float, limit: int = 500) -> list[str]:
        """Ids of up to ``limit`` traces with a span that started in [start, end] (unix seconds), any service."""
        if self.kind == "tempo":
            response = self.http.get("/api/search", params={"start": int(start), "end": int(end) + 1, "limit": limit})
            response.raise_for_status()
            return [hex_id(t["traceID"]).rjust(32, "0") for t in response.json().get("traces", [])]
        return list(dict.fromkeys(s.trace_id for s in self._jaeger_search(start, end, limit)))[:limit]

    def recent_spans(self, start: float, end: float, limit: int = 500) -> list[StoredSpan]:
        """Every span of up to ``limit`` traces with a span that started in [start, end] (unix seconds)."""
        if self.kind == "tempo":  # its search answers ids only
            return [span for trace_id in self.recent_trace_ids(start, end, limit) for span in self.trace(trace_id)]
        return self._jaeger_search(start, end, limit)

    def _jaeger_search(self, start: float, end: float, limit: int) -> list[StoredSpan]:
        # No query.service_name: badger then scans every span by start time (a service name would hide the spans
        # of a service nobody expected, a planted orphan's). The answer holds the traces themselves.
        response = self.http.get("/api/v3/traces", params={
            "query.start_time_min": rfc3339(start), "query.start_time_max": rfc3339(end),
            "query.num_traces": limit, "query.raw_traces": "true"})
        if response.status_code == 404:  # Jaeger's answer to a search that found nothing
            return []
        response.raise_for_status()
        return spans_from_otlp_json(response.json())

    def trace(self, trace_id: str) -> list[StoredSpan]:
        """The trace's spans; empty if the store does not know it."""
        if self.kind == "tempo":
            response = self.http.get(f"/api/traces/{trace_id}", headers={"Accept": "application/json"})
        else:
            response = self.http.get(f"/api/v3/traces/{trace_id}", params={"raw_traces": "true"})
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return spans_from_otlp_json(response.json())

    def close(self) -> None:
        self.http.close()
