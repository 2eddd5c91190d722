"""The usage report's pure parts: windows cut at UTC midnights, and the report from its figures."""

from datetime import UTC, datetime, timedelta

import pytest

from lynx.contracts.budgets import TenantDecision
from lynx.accounting.usage import day_pieces, usage_report

NOW = datetime(2026, 6, 10, 15, 30, tzinfo=UTC)
MIDNIGHT = datetime(2026, 6, 10, tzinfo=UTC)
WINDOWS = {"spent_7_days_eur": 3.0, "spent_30_days_eur": 4.0}


def test_a_window_is_cut_at_every_utc_midnight_and_covers_itself_exactly():
    pieces = day_pieces(NOW - timedelta(days=7), NOW)
    assert len(pieces) == 8
    assert pieces[0] == (NOW - timedelta(days=7), datetime(2026, 6, 4, tzinfo=UTC))
    assert pieces[-1] == (MIDNIGHT, NOW)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
    assert all(end - start == timedelta(days=1) for start, end in pieces[1:-1])
    assert day_pieces(MIDNIGHT + timedelta(hours=1), NOW) == [(MIDNIGHT + timedelta(hours=1), NOW)]
    assert day_pieces(MIDNIGHT - timedelta(days=1), MIDNIGHT) == [(MIDNIGHT - timedelta(days=1), MIDNIGHT)]


def decision(state: str) -> TenantDecision:
    return TenantDecision(tenant="acme", state=state, cap_eur=2.0, spent_eur=1.0, remaining_eur=1.0,
                          day_started_at=MIDNIGHT, resets_at=MIDNIGHT + timedelta(days=1), spend_as_of=NOW,
                          reason="r")


def test_the_report_takes_state_and_cap_from_the_decision_and_remaining_from_todays_spend():
    day = (MIDNIGHT, MIDNIGHT + timedelta(days=1))
    report = usage_report("acme", decision("Warning"), 1.5, NOW, WINDOWS, day)
    assert (report.state, report.cap_eur, report.remaining_eur, report.spent_7_days_eur) == ("Warning", 2.0, 0.5, 3.0)
    assert usage_report("acme", decision("Ok"), 2.5, NOW, WINDOWS, day).remaining_eur == 0.0
    assert usage_report("acme", decision("Paused"), 0.5, NOW, WINDOWS, day).remaining_eur == 0.0
    unbudgeted = usage_report("acme", None, 1.5, NOW, WINDOWS, day)
    assert (unbudgeted.state, unbudgeted.cap_eur, unbudgeted.remaining_eur) == ("unbudgeted", None, None)


def test_an_unreachable_prometheus_is_a_503_that_names_it():
    from lynx.local.processes import free_port
    from lynx.service.errors import LynxError
    from lynx.accounting.usage import SpendHistory
    from lynx.telemetry.prometheus_api import PrometheusClient

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with PrometheusClient(url, timeout_seconds=2) as prometheus, pytest.raises(LynxError) as raised:
        SpendHistory(prometheus).report("acme", decision("Ok"), NOW)
    refusal = raised.value
    assert refusal.status == 503 and refusal.code == "usage_unavailable" and refusal.type == "server_error"
    assert url in refusal.message and "Unreachable" in refusal.message and refusal.headers["Retry-After"]


def test_settled_days_keep_only_whole_days_ended_a_while_ago_until_forgotten():
    from datetime import UTC, datetime, timedelta

    from lynx.accounting.usage import SETTLED_AFTER, SettledDays
    day = datetime(2026, 12, 1, tzinfo=UTC)
    settled = SettledDays()
    settled.keep("acme", day, 1.5, day + timedelta(days=1))  # just ended: its last samples may not be scraped yet
    assert settled.get("acme", day) is None
    settled.keep("acme", day, 1.5, day + timedelta(days=1) + SETTLED_AFTER)
    settled.keep("acme", day + timedelta(hours=1), 9.0, day + timedelta(days=3))  # not a UTC day
    assert settled.get("acme", day) == 1.5 and settled.get("globex", day) is None
    assert settled.get("acme", day + timedelta(hours=1)) is None
    settled.forget_before(day + timedelta(days=1))
    assert settled.get("acme", day) is None
