"""One audit run: fetch the settled recent traces from Tempo, count orphans, publish the numbers."""

from __future__ import annotations

import logging
import time

from lynx.auditor.audit import EMPTY, AuditResult, AuditWindow, audit_trace
from lynx.auditor.settings import AuditorSettings
from lynx.auditor.tempo import TempoClient
from lynx.telemetry.metrics import auditor_metrics

log = logging.getLogger("lynx.auditor")


class Auditor:
    def __init__(self, settings: AuditorSettings, tempo: TempoClient) -> None:
        self.settings = settings
        self.tempo = tempo
        self.window = AuditWindow(settings.lookback_seconds)
        self.metrics = auditor_metrics()

    def run_once(self, now: float | None = None) -> AuditResult:
        """Audit traces not seen before; returns the totals over the lookback window."""
        now = time.time() if now is None else now
        end = now - self.settings.settle_seconds
        try:
            candidates = self.tempo.recent_trace_ids(end - self.settings.lookback_seconds, end,
                                                     self.settings.max_traces_per_run)
            fresh = EMPTY
            for trace_id in self.window.pending(candidates):
                result = audit_trace(self.tempo.trace(trace_id))
                self.window.add(trace_id, result, now)
                fresh = fresh + result
        except Exception:
            self.metrics.failures.inc()
            log.exception("audit_failed")
            raise
        self.window.expire(now)
        totals = self.window.totals()
        self.metrics.traces_checked.inc(fresh.traces)
        self.metrics.spans_checked.inc(fresh.spans)
        self.metrics.orphans_found.inc(fresh.orphans)
        self.metrics.orphan_spans.set(totals.orphans)
        self.metrics.window_spans.set(totals.spans)
        self.metrics.window_traces.set(totals.traces)
        self.metrics.last_run.set(now)
        if fresh.orphans:
            log.warning("orphan_spans", extra={"fields": {"count": fresh.orphans,
                                                          "examples": list(fresh.orphan_examples)}})
        return totals
