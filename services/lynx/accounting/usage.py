"""``GET /v1/lynx/usage``: a tenant's spend today, over 7 and 30 days, from the gateways' cost counter in Prometheus
(read exactly as the budget controller reads it: ``lynx.accounting.spend``), with its cap, state and reset from the
controller's published decision.

A window is read in pieces of at most one UTC day, each one raw-sample read like the controller's daily one (a 30-day
range selector would fetch a month of raw samples at every call). A whole UTC day that ended a while ago no longer
changes, so its figure is remembered: once they are, a report costs the tenant's day plus three partial UTC days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lynx.accounting.spend import read_spend
from lynx.contracts.budgets import TenantDecision, TenantUsage
from lynx.service.errors import LynxError
from lynx.telemetry.prometheus_api import PrometheusClient, PrometheusError

DAY = timedelta(days=1)
WINDOWS = {"spent_7_days_eur": timedelta(days=7), "spent_30_days_eur": timedelta(days=30)}
# A UTC day that ended this long ago has every sample Prometheus will ever hold of it (a scrape is stamped when it
# starts and lands when it ends, within its timeout).
SETTLED_AFTER = timedelta(minutes=2)
USAGE_UNAVAILABLE = "usage_unavailable"


def utc_midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day_pieces(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end] cut at every UTC midnight between them."""
    pieces, piece_start = [], start
    while (cut := utc_midnight(piece_start) + DAY) < end:
        pieces.append((piece_start, cut))
        piece_start = cut
    return [*pieces, (piece_start, end)]


def usage_report(tenant: str, decision: TenantDecision | None, today: float, today_as_of: datetime,
                 windows: dict[str, float], day: tuple[datetime, datetime]) -> TenantUsage:
    """The report from its figures (pure): the controller's state and cap, remaining as cap - today's spend (0 when
    Blocked or Paused, as the controller counts it)."""
    if decision is None:
        state, cap, remaining = "unbudgeted", None, None
    else:
        state, cap = decision.state, decision.cap_eur
        remaining = 0.0 if state in ("Blocked", "Paused") else max(cap - today, 0.0)
    return TenantUsage(tenant=tenant, state=state, spent_today_eur=today, spend_as_of=today_as_of,
                       day_started_at=day[0], resets_at=day[1], cap_eur=cap, remaining_eur=remaining, **windows)


class SettledDays:
    """Figures of whole UTC days that ended more than ``SETTLED_AFTER`` ago (their last samples scraped): they no
    longer change, so each is read once and remembered, by what it counts (a tenant, a counter) and the day's start,
    until ``forget_before`` drops the days no window reaches any more."""

    def __init__(self) -> None:
        self._figures: dict[tuple[str, datetime], float] = {}

    def get(self, what: str, day_start: datetime) -> float | None:
        return self._figures.get((what, day_start))

    def keep(self, what: str, day_start: datetime, value: float, now: datetime) -> None:
        """Remember ``value`` when its day is whole and settled at ``now``; otherwise nothing."""
        if day_start == utc_midnight(day_start) and now - (day_start + DAY) >= SETTLED_AFTER:
            self._figures[what, day_start] = value

    def forget_before(self, moment: datetime) -> None:
        for key in [key for key in list(self._figures) if key[1] < moment]:  # list(): other threads add days
            del self._figures[key]


class SpendHistory:
    """Reads tenants' spend from Prometheus for the usage report; remembers the settled whole UTC days."""

    def __init__(self, prometheus: PrometheusClient) -> None:
        self.prometheus = prometheus
        self.settled = SettledDays()  # each tenant's whole days' spend

    def report(self, tenant: str, decision: TenantDecision | None, now: datetime) -> TenantUsage:
        """Blocking (Prometheus' client is synchronous): run it in a thread. Raises the 503 when Prometheus cannot be
        read."""
        day = (decision.day_started_at, decision.resets_at) if decision else (utc_midnight(now), utc_midnight(now) + DAY)
        try:
            today = read_spend(self.prometheus, tenant, day[0], now)
            pieces: dict[tuple[datetime, datetime], float] = {}  # the partial days both windows share, read once
            windows = {name: sum(self._piece(tenant, piece, now, pieces) for piece in day_pieces(now - length, now))
                       for name, length in WINDOWS.items()}
        except PrometheusError as error:
            raise LynxError(503, f"Usage cannot be read now: the spend figures come from Prometheus at "
                            f"{self.prometheus.url}, which could not be read ({error}). Retry shortly.",
                            USAGE_UNAVAILABLE, "server_error", headers={"Retry-After": "10"}) from None
        self.settled.forget_before(now - max(WINDOWS.values()) - DAY)
        return usage_report(tenant, decision, today.spent_eur, today.as_of, windows, day)

    def _piece(self, tenant: str, piece: tuple[datetime, datetime], now: datetime,
               read: dict[tuple[datetime, datetime], float]) -> float:
        start, end = piece
        whole = end - start == DAY
        if whole and (settled := self.settled.get(tenant, start)) is not None:
            return settled
        if piece not in read:
            read[piece] = read_spend(self.prometheus, tenant, start, end).spent_eur
            if whole:
                self.settled.keep(tenant, start, read[piece], now)
        return read[piece]
