"""Structured JSON logs that carry trace_id, span_id and request_id."""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

from lynx.telemetry.request_id import request_id_var
from lynx.telemetry.tracing import trace_ids



class JsonFormatter(logging.Formatter):
    """One JSON object a line; fields passed as ``extra={"fields": {...}}`` are merged in."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = trace_ids(trace.get_current_span())
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": request_id_var.get(),
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
