"""One audit run: read the recent traces from the trace store, judge those that can no longer complete, publish
the numbers."""

from __future__ import annotations

import logging
import threading
import time

from lynx.auditor.audit import EMPTY, AuditResult, AuditWindow
from lynx.auditor.settings import AuditorSettings
from lynx.telemetry.tracestore import TraceStoreClient
from lynx.telemetry.metrics import auditor_metrics

log = logging.getLogger("lynx.auditor")


class Auditor:
    def __init__(self, settings: AuditorSettings, store: TraceStoreClient) -> None:
        self.settings = settings
        self.store = store
        self.window = AuditWindow(settings.lookback_seconds, settings.complete_after_seconds)
        self.metrics = auditor_metrics()
        self.lock = threading.Lock()  # the periodic loop and POST /v1/audit run in threads of their own

    def run_once(self, now: float | None = None) -> AuditResult:
        """Reads every trace of the window without a verdict yet; returns the totals over the window."""
        with self.lock:
            return self._run(time.time() if now is None else now)

    def _run(self, now: float) -> AuditResult:
        try:
            candidates = self.store.recent_trace_ids(now - self.settings.lookback_seconds, now,
                                                     self.settings.max_traces_per_run)
            judged = EMPTY  # traces whose verdict this run gave
            for trace_id in self.window.due(candidates):
                check = self.window.record(trace_id, self.store.trace(trace_id), now)
                if check is not None and check.final:
                    judged = judged + check.result
        except Exception:
            self.metrics.failures.inc()
            log.exception("audit_failed")
            raise
        self.window.expire(now)
        totals = self.window.totals()
        self.metrics.traces_checked.inc(judged.traces)
        self.metrics.spans_checked.inc(judged.spans)
        self.metrics.orphans_found.inc(judged.orphans)
        self.metrics.orphan_spans.set(totals.orphans)
        self.metrics.incomplete_traces.set(totals.incomplete)
        self.metrics.window_spans.set(totals.spans)
        self.metrics.window_traces.set(totals.traces)
        self.metrics.last_run.set(now)
        if judged.orphans:
            log.warning("orphan_spans", extra={"fields": {"count": judged.orphans,
                                                          "examples": list(judged.orphan_examples)}})
        return totals
