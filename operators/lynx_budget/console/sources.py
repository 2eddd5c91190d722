"""The console's reads: the budget store, Prometheus (the gateways' cost and token counters, read as the controller
reads them) and the trace store. Blocking clients: the routes call them in a thread. Each read that fails says so in
words (``Unreadable``) for the page to show beside what could be read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from lynx.accounting.spend import COUNTER, CREATED, window_seconds
from lynx.telemetry.tracestore import StoredSpan, TraceStoreClient
from lynx.accounting.usage import SettledDays, SpendHistory, day_pieces, utc_midnight
from lynx.telemetry.metrics import COMPLETION_ENDPOINTS
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError, label_value
from lynx_budget.console.data import Filters, RequestSummary, charged_requests, spend_by_label
from lynx_budget.console.settings import ConsoleSettings

DAY = timedelta(days=1)
TREND_DAYS = (7, 30)  # the overview's trends: EUR and tokens per day over these many days
TOKENS = ("lynx_tokens_total", "lynx_tokens_created")
SERVED = ("lynx_request_total", "lynx_request_created")
TRACED = ("lynx_traced_requests_total", "lynx_traced_requests_created")


class Unreadable(Exception):
    """A store could not be read; the message says which and why."""


def matchers(filters: Filters) -> str:
    labels = {"tenant": filters.tenant, "model_name": filters.model}
    return ",".join(f"{name}={label_value(value)}" for name, value in labels.items() if value)


@dataclass
class ConsoleSources:
    settings: ConsoleSettings
    prometheus: PrometheusClient
    traces: TraceStoreClient
    usage: SpendHistory
    settled: SettledDays = field(default_factory=SettledDays)  # each counter's whole days, unfiltered

    @classmethod
    def open(cls, settings: ConsoleSettings, prometheus: PrometheusClient) -> ConsoleSources:
        return cls(settings, prometheus, TraceStoreClient(settings.trace_store_url, settings.trace_store_kind),
                   SpendHistory(prometheus))

    def close(self) -> None:
        self.traces.close()

    def today_rows(self, now: datetime) -> list[dict]:
        """The raw samples of every tenant's cost counters since UTC midnight (``data.spend_by_label`` sums them)."""
        day_start = utc_midnight(now)
        try:
            return self.prometheus.samples(
                f'{{__name__=~"{COUNTER}|{CREATED}"}}[{window_seconds(day_start, now)}s]', now)
        except PrometheusError as error:
            raise Unreadable(f"Prometheus at {self.prometheus.url} could not be read: {error}") from None

    def daily(self, counter: tuple[str, str], filters: Filters, days: int, now: datetime
              ) -> list[tuple[datetime, float]]:
        """The counter's increase in each of the last ``days`` UTC days (today so far last), read exactly as the
        controller reads a day's spend (raw samples, ``data.spend_by_label``). A day that ended a while ago no longer
        changes: it is remembered (as the usage report remembers them)."""
        points = []
        first = utc_midnight(now) - (days - 1) * DAY
        for start, end in day_pieces(first, now):
            if filters == Filters() and (settled := self.settled.get(counter[0], start)) is not None:
                points.append((start, settled))
                continue
            names = f'__name__=~"{"|".join(counter)}"'
            selector = "{" + ",".join(part for part in (names, matchers(filters)) if part) + "}"
            try:
                rows = self.prometheus.samples(f"{selector}[{window_seconds(start, end)}s]", end)
            except PrometheusError as error:
                raise Unreadable(f"Prometheus at {self.prometheus.url} could not be read: {error}") from None
            value = sum(spend_by_label(rows, "tenant", start, end, counter).values())
            if filters == Filters():  # filtered figures are not kept: unbounded
                self.settled.keep(counter[0], start, value, now)
            points.append((start, value))
        self.settled.forget_before(utc_midnight(now) - max(TREND_DAYS) * DAY)  # no trend reaches back further
        return points

    def eur_daily(self, filters: Filters, days: int, now: datetime) -> list[tuple[datetime, float]]:
        return self.daily((COUNTER, CREATED), filters, days, now)

    def tokens_daily(self, filters: Filters, days: int, now: datetime) -> list[tuple[datetime, float]]:
        return self.daily(TOKENS, filters, days, now)

    def served_and_traced(self, now: datetime) -> tuple[float | None, float | None]:
        """(traced, served) completion requests over the lists' window, from the gateways' counters read exactly
        (raw samples, as spend is read): None, None when Prometheus cannot be read."""
        start = now - timedelta(hours=self.settings.recent_hours)
        names = "|".join((*SERVED, *TRACED))
        try:
            rows = self.prometheus.samples(
                f'{{__name__=~"{names}",{COMPLETION_ENDPOINTS}}}[{window_seconds(start, now)}s]', now)
        except PrometheusError:
            return None, None
        traced, served = (sum(spend_by_label(rows, "endpoint", start, now, counter).values())
                          for counter in (TRACED, SERVED))
        return traced, served

    def recent_requests(self, now: datetime) -> list[RequestSummary]:
        """The charged requests the trace store holds from the last ``recent_hours``, newest first."""
        start = now - timedelta(hours=self.settings.recent_hours)
        try:
            spans = self.traces.recent_spans(start.timestamp(), now.timestamp(), self.settings.recent_traces_limit)
        except httpx.HTTPError as error:
            raise Unreadable(f"the trace store at {self.settings.trace_store_url} could not be read: {error}") from None
        return charged_requests(spans)

    def trace(self, trace_id: str) -> list[StoredSpan]:
        try:
            return self.traces.trace(trace_id)
        except httpx.HTTPError as error:
            raise Unreadable(f"the trace store at {self.settings.trace_store_url} could not be read: {error}") from None
