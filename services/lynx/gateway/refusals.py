"""Every budget refusal, counted and logged in one place: ``lynx_budget_refused_requests_total{tenant,reason}`` and
one ``request_refused`` log event naming the tenant, the reason and when in the request it was refused."""

from __future__ import annotations

import logging

from lynx.service.errors import LynxError
from lynx.telemetry.metrics import enforcement_metrics

log = logging.getLogger("lynx.gateway.budgets")
ADMISSION = "admission"  # before any upstream call: nothing is charged
RESERVATION = "reservation"  # the prompt tokenized, its worst case does not fit: charged for the stages it used


def refused(tenant: str, reason: str, phase: str, error: LynxError) -> LynxError:
    """Counts and logs the refusal ``error`` of a request of ``tenant``; returns it, to be raised."""
    enforcement_metrics().refused.labels(tenant, reason).inc()
    log.info("request_refused", extra={"fields": {"tenant": tenant, "reason": reason, "phase": phase,
                                                  "status": error.status, "code": error.code,
                                                  "message": error.message}})
    return error
