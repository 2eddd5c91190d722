"""The admin's actions on a budget spec, the explanation and the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from lynx.contracts.budgets import BudgetSpec
from lynx_budget.admin import CSV_COLUMNS, add_raise, explain, pause, resume, spend_csv
from lynx_budget.policy import SpendFailure, SpendReading

from .test_policy import decide

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
SPEC = BudgetSpec(tenant="acme", daily_cap_eur=2.0, timezone="Europe/Paris")


def test_pause_and_resume_flip_only_the_switch():
    paused = pause(SPEC)
    assert paused.paused and not SPEC.paused
    assert paused.model_dump(exclude={"paused"}) == SPEC.model_dump(exclude={"paused"})
    assert resume(paused) == SPEC


def test_add_raise_appends_a_raise_from_now():
    raised = add_raise(SPEC, 3.0, 24, "quarter-end batch", "alice", NOW)
    (r,) = raised.raises
    assert (r.amount_eur, r.reason, r.requested_by) == (3.0, "quarter-end batch", "alice")
    assert r.requested_at == NOW and r.expires_at == NOW + timedelta(hours=24)
    again = add_raise(raised, 1.0, 72, "one more day", "bob", NOW)
    assert len(again.raises) == 2 and SPEC.raises == []
    assert decide(again, SpendReading(0.0, NOW), NOW, None).decision.cap_eur == 6.0


@pytest.mark.parametrize("hours", [0, -1, 72.01, 100])
def test_add_raise_refuses_a_duration_out_of_bounds(hours):
    with pytest.raises(ValueError, match="at most 72 hours"):
        add_raise(SPEC, 3.0, hours, "quarter-end batch", "alice", NOW)


@pytest.mark.parametrize(("amount", "reason"), [(0.0, "a good reason"), (-1.0, "a good reason"), (1.0, "no")])
def test_add_raise_refuses_what_the_resource_schema_refuses(amount, reason):
    with pytest.raises(ValueError):
        add_raise(SPEC, amount, 1, reason, "alice", NOW)


def test_add_raise_needs_an_aware_clock():
    with pytest.raises(ValueError, match="timezone"):
        add_raise(SPEC, 1.0, 1, "a good reason", "alice", datetime(2026, 6, 10, 12))


def test_explain_says_why_a_tenant_is_blocked_and_what_to_do():
    status = decide(SPEC, SpendReading(2.5, NOW), NOW, None).status
    text = explain(SPEC, status, NOW + timedelta(minutes=1))
    for words in ("Blocked", "2.50 EUR of 2.00 EUR", "2026-06-11 00:00 Europe/Paris", "temporary raise", "72 h"):
        assert words in text
    assert "history" in text


def test_explain_says_when_the_spend_cannot_be_read_and_lists_the_raises():
    blocked = decide(SPEC, SpendReading(2.5, NOW), NOW, None).status
    raised = add_raise(SPEC, 1.0, 2, "demo for a customer", "alice", NOW)
    later = NOW + timedelta(minutes=5)
    down = decide(raised, SpendFailure("Unreachable", "Prometheus at http://prom:9090 did not answer"), later, blocked).status
    text = explain(raised, down, later)
    assert "Raise in force: +1.00 EUR" in text and "demo for a customer" in text
    assert "cannot be read since 2026-06-10T12:05:00Z (Unreachable)" in text
    assert "stays Blocked until its spend can be read" in text
    # Hours later the raise has expired and the decision belongs to the previous day.
    text = explain(raised, down, NOW + timedelta(hours=12))
    assert "Raise expired" in text and "has not reconciled the new day" in text


def test_explain_before_any_decision():
    assert "not reconciled" in explain(pause(SPEC), None, NOW)
    assert "Paused by an admin" in explain(pause(SPEC), None, NOW)


def test_spend_csv_has_one_row_per_tenant_with_the_day():
    acme = decide(SPEC, SpendReading(0.0123456789012, NOW), NOW, None).status
    other = BudgetSpec(tenant="beta", daily_cap_eur=5.0)
    unknown = decide(other, SpendFailure("Unreachable", "down"), NOW, None).status
    fresh = BudgetSpec(tenant="gamma", daily_cap_eur=1.0)
    rows = list(csv.reader(io.StringIO(spend_csv([(fresh, None), (other, unknown), (SPEC, acme)]))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == ["acme", "Ok", "0.0123456789", "2", "1.987654321", "2026-06-09T22:00:00Z", "2026-06-10T22:00:00Z"]
    assert rows[2] == ["beta", "Ok", "", "5", "5", "2026-06-10T00:00:00Z", "2026-06-11T00:00:00Z"]
    assert rows[3] == ["gamma", "", "", "1", "", "", ""]


def test_spend_csv_lists_tenants_without_a_budget_with_an_empty_cap():
    acme = decide(SPEC, SpendReading(0.5, NOW), NOW, None).status
    rows = list(csv.reader(io.StringIO(spend_csv([(SPEC, acme)], [("zulu", SpendReading(0.25, NOW)),
                                                                   ("beta", SpendReading(1e-05, NOW))], NOW))))
    assert [row[0] for row in rows[1:]] == ["acme", "beta", "zulu"]
    assert rows[2] == ["beta", "", "1e-05", "", "", "2026-06-10T00:00:00Z", "2026-06-11T00:00:00Z"]
    assert rows[3][:5] == ["zulu", "", "0.25", "", ""]
