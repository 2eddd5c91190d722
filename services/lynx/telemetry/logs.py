"""Structured JSON logs: every line an event with its own id, and the trace, span and request it belongs to."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid

from opentelemetry import trace

from lynx.telemetry.request_id import request_id_var, request_started_var
from lynx.telemetry.tracing import trace_ids


def utc_timestamp(seconds: float) -> str:
    """ISO 8601 in UTC to the millisecond, as every timestamp in the logs is written."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line; fields passed as ``extra={"fields": {...}}`` are merged in."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = trace_ids(trace.get_current_span())
        request_started = request_started_var.get()
        entry = {
            "ts": utc_timestamp(record.created),
            "event_id": uuid.uuid4().hex,  # one line, one event: what a log pipeline deduplicates and links by
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": request_id_var.get(),
            # When the request this line belongs to reached this service ("" outside a request).
            "request_started_at": utc_timestamp(request_started) if request_started is not None else "",
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str) -> None:
    """Route the root logger (and uvicorn's) through the JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Requests are logged once, by lynx's middleware, with the route template and trace ids.
    logging.getLogger("uvicorn.access").disabled = True
