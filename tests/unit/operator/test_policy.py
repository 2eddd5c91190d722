"""The budget policy: thresholds, raises, pause, unknown spend, day windows and rollover, the status format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lynx.contracts.budgets import BudgetSpec, TemporaryRaise
from lynx_budget.policy import (
    PROMETHEUS_REACHABLE,
    BudgetStatus,
    ConfirmedSpend,
    SpendFailure,
    SpendReading,
    Unpayable,
    day_window,
    decide_state,
    effective_cap,
    Reconciliation,
    raise_key,
    reconcile,
)

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def spec(**fields) -> BudgetSpec:
    return BudgetSpec(**{"tenant": "acme", "daily_cap_eur": 10.0, **fields})


def decide(spec: BudgetSpec, spend: SpendReading | SpendFailure, now: datetime, last: BudgetStatus | None,
           **settings) -> Reconciliation:
    """reconcile in the tenant's day at ``now``, as the operator and the local loop compute it."""
    return reconcile(spec, spend, day_window(spec.timezone, now), now, last, **settings)


def spent(eur: float, at: datetime = NOON) -> SpendReading:
    return SpendReading(eur, at - timedelta(seconds=7))


def a_raise(amount: float = 5.0, asked: datetime = NOON - HOUR, hours: float = 24, by: str = "ops") -> TemporaryRaise:
    return TemporaryRaise(amount_eur=amount, requested_at=asked, expires_at=asked + timedelta(hours=hours),
                          reason="quarter-end batch", requested_by=by)


def kinds(result) -> list[str]:
    return [e.kind for e in result.status.history]


def test_day_window_needs_an_aware_clock():
    with pytest.raises(ValueError, match="timezone"):
        day_window("UTC", datetime(2026, 6, 10, 12))


@pytest.mark.parametrize(("timezone", "local_day", "hours", "utc_start"), [
    ("UTC", "2026-06-10", 24, "2026-06-10T00:00:00+00:00"),
    ("Europe/Paris", "2026-03-29", 23, "2026-03-28T23:00:00+00:00"),  # clocks go forward at 02:00
    ("Europe/Paris", "2026-10-25", 25, "2026-10-24T22:00:00+00:00"),  # clocks go back at 03:00
    ("Europe/Paris", "2026-06-10", 24, "2026-06-09T22:00:00+00:00"),
    ("America/New_York", "2026-03-08", 23, "2026-03-08T05:00:00+00:00"),
    ("America/New_York", "2026-11-01", 25, "2026-11-01T04:00:00+00:00"),
    ("Asia/Kolkata", "2026-06-10", 24, "2026-06-09T18:30:00+00:00"),
])
def test_day_window_runs_from_local_midnight_to_the_next(timezone, local_day, hours, utc_start):
    zone = ZoneInfo(timezone)
    for local_time in ("00:00:00", "01:59:59", "12:00:00", "23:59:59"):
        now = datetime.fromisoformat(f"{local_day}T{local_time}").replace(tzinfo=zone)
        start, end = day_window(timezone, now)
        assert start == datetime.fromisoformat(utc_start)
        assert end - start == timedelta(hours=hours)
        assert start <= now < end
        assert start.tzinfo == UTC and end.tzinfo == UTC
        assert end.astimezone(zone).strftime("%H:%M") == "00:00"


@pytest.mark.parametrize(("eur", "state", "left"), [
    (0.0, "Ok", 10.0), (7.99, "Ok", 2.01), (8.0, "Warning", 2.0), (9.99, "Warning", 0.01),
    (10.0, "Blocked", 0.0), (12.5, "Blocked", 0.0),
])
def test_thresholds(eur, state, left):
    result = decide(spec(), spent(eur), NOON, None)
    assert result.decision.state == state == result.status.state
    assert result.decision.remaining_eur == pytest.approx(left)
    assert result.decision.spent_eur == eur and result.decision.cap_eur == 10.0


def test_a_custom_warning_threshold_and_a_zero_cap():
    assert decide_state(5.0, 10.0, warning_percent=50) == "Warning"
    assert decide_state(4.9, 10.0, warning_percent=50) == "Ok"
    assert decide(spec(daily_cap_eur=0), spent(0.0), NOON, None).decision.state == "Blocked"


def test_the_decision_says_what_a_tenant_owner_can_act_on():
    blocked = decide(spec(timezone="Europe/Paris"), spent(10.5), NOON, None).decision
    assert blocked.state == "Blocked"
    for words in ("10.50 EUR", "10.00 EUR", "2026-06-11 00:00 Europe/Paris", "2026-06-10 22:00 UTC", "raise", "72 h"):
        assert words in blocked.reason
    warning = decide(spec(), spent(8.5), NOON, None).decision
    assert "85%" in warning.reason and "1.50 EUR left" in warning.reason and "raise" in warning.reason


def test_the_decision_carries_the_window_and_the_spec_settings():
    result = decide(spec(timezone="Asia/Kolkata", per_request_cap_eur=0.01, cheaper_near_cap=True),
                       spent(1.0), NOON, None)
    decision = result.decision
    assert (decision.day_started_at, decision.resets_at) == day_window("Asia/Kolkata", NOON)
    assert decision.spend_as_of == NOON - timedelta(seconds=7)
    assert decision.per_request_cap_eur == 0.01 and decision.cheaper_near_cap
    assert result.status.last_read_at == NOON


def test_a_raise_lifts_the_cap_until_it_expires_and_is_audited_once():
    blocked = decide(spec(), spent(12.5), NOON, None)
    assert blocked.decision.state == "Blocked"
    raised = spec(raises=[a_raise(5.0, hours=3)])
    later = NOON + timedelta(minutes=1)
    unblocked = decide(raised, spent(12.5, later), later, blocked.status)
    assert unblocked.decision.state == "Warning" and unblocked.decision.cap_eur == 15.0
    assert kinds(unblocked)[-2:] == ["raise_added", "state"]
    assert [e.reason for e in unblocked.events] == ["RaiseAdded", "StateChanged"]
    again = decide(raised, spent(12.5, later), later + timedelta(minutes=1), unblocked.status)
    assert again.events == () and again.status.history == unblocked.status.history

    expiry = raised.raises[0].expires_at
    expired = decide(raised, spent(12.5, expiry), expiry, again.status)
    assert expired.expired_raises == tuple(raised.raises)
    assert expired.decision.state == "Blocked" and expired.decision.cap_eur == 10.0
    assert kinds(expired)[-2:] == ["raise_expired", "state"]
    # The caller has not removed it yet: it is handed back again, but not audited twice.
    still = decide(raised, spent(12.5, expiry), expiry + HOUR, expired.status)
    assert still.expired_raises == tuple(raised.raises) and still.events == ()
    # Once removed from the spec, its keys leave the status.
    removed = decide(spec(), spent(12.5, expiry), expiry + 2 * HOUR, still.status)
    assert removed.status.audited_raises == () and removed.events == ()


def test_effective_cap_counts_only_the_raises_in_force():
    budget = spec(raises=[a_raise(5.0, hours=2), a_raise(3.0, hours=48, by="cfo"),
                          a_raise(100.0, hours=73, by="intern")])
    assert effective_cap(budget, NOON) == 18.0
    assert effective_cap(budget, NOON + 2 * HOUR) == 13.0
    assert effective_cap(budget, NOON + 48 * HOUR) == 10.0


@pytest.mark.parametrize(("bad", "why"), [
    (a_raise(100.0, hours=72.5), "more than the 72 h"),
    (TemporaryRaise(amount_eur=100.0, requested_at=NOON + 10 * HOUR, expires_at=NOON + 20 * HOUR,
                    reason="from the future", requested_by="clock"), "in the future"),
    (TemporaryRaise(amount_eur=100.0, requested_at=NOON - HOUR, expires_at=NOON - 2 * HOUR + 30 * HOUR,
                    reason="backwards", requested_by="x").model_copy(update={"requested_at": NOON + 29 * HOUR}),
     "before it was asked for"),
])
def test_an_invalid_raise_is_ignored_and_audited_once(bad, why):
    budget = spec(raises=[bad])
    first = decide(budget, spent(11.0), NOON, None)
    assert first.decision.state == "Blocked" and first.decision.cap_eur == 10.0
    rejected = [e for e in first.events if e.reason == "RaiseRejected"]
    assert len(rejected) == 1 and rejected[0].type == "Warning" and why in rejected[0].message
    second = decide(budget, spent(11.0), NOON + HOUR, first.status)
    assert second.events == () and second.decision.cap_eur == 10.0


def test_raise_key_is_stable_across_timezones_and_tells_raises_apart():
    r = a_raise()
    paris = r.model_copy(update={"requested_at": r.requested_at.astimezone(ZoneInfo("Europe/Paris")),
                                 "expires_at": r.expires_at.astimezone(ZoneInfo("Europe/Paris"))})
    assert raise_key(r) == raise_key(paris)
    assert raise_key(r) != raise_key(a_raise(by="someone else"))


def test_pause_refuses_everything_and_resume_goes_back_to_the_spend():
    ok = decide(spec(), spent(1.0), NOON, None)
    paused = decide(spec(paused=True), spent(1.0), NOON + HOUR, ok.status)
    assert paused.decision.state == "Paused" and paused.decision.remaining_eur == 0.0
    assert paused.decision.spent_eur == 1.0 and "resumes" in paused.decision.reason
    assert kinds(paused)[-1] == "paused" and [e.reason for e in paused.events] == ["Paused"]
    # Paused wins even over an unreadable spend, and without a last status.
    assert decide(spec(paused=True), SpendFailure("Unreachable", "down"), NOON, None).decision.state == "Paused"
    resumed = decide(spec(), spent(8.5), NOON + 2 * HOUR, paused.status)
    assert resumed.decision.state == "Warning"
    assert kinds(resumed)[-1] == "resumed" and [e.reason for e in resumed.events] == ["Resumed"]


def test_unknown_spend_keeps_the_last_figures_and_sets_the_condition():
    ok = decide(spec(), spent(8.5), NOON, None)
    assert ok.status.condition(PROMETHEUS_REACHABLE).status is True
    later = NOON + timedelta(minutes=5)
    down = decide(spec(), SpendFailure("Unreachable", "Prometheus at http://p:9090 did not answer (ConnectError)"), later,
                     ok.status)
    assert down.decision.state == "Warning"
    assert (down.decision.spent_eur, down.decision.spend_as_of) == (8.5, ok.status.spend_as_of)
    assert down.status.last_read_at == NOON
    condition = down.status.condition(PROMETHEUS_REACHABLE)
    assert (condition.status, condition.reason, condition.last_transition) == (False, "Unreachable", later)
    assert "did not answer" in condition.message and "did not answer" in down.decision.reason
    assert [(e.type, e.reason) for e in down.events] == [("Warning", "SpendUnavailable")]
    # Still down: the condition keeps its transition time, nothing new is audited.
    still = decide(spec(), SpendFailure("BadAnswer", "garbage"), later + HOUR, down.status)
    assert still.events == () and still.status.condition(PROMETHEUS_REACHABLE).last_transition == later
    assert still.status.condition(PROMETHEUS_REACHABLE).reason == "BadAnswer"
    back = decide(spec(), spent(9.0, later + 2 * HOUR), later + 2 * HOUR, still.status)
    assert [e.reason for e in back.events] == ["SpendRead"]
    assert back.status.condition(PROMETHEUS_REACHABLE).status is True


def test_the_lease_ledgers_spend_decides_while_prometheus_is_down_and_the_condition_still_says_so():
    ok = decide(spec(), spent(8.5), NOON, None)
    later = NOON + timedelta(minutes=5)
    failure = SpendFailure("Unreachable", "Prometheus at http://p:9090 did not answer (ConnectError)")
    confirmed = decide(spec(), ConfirmedSpend(10.0, later, failure), later, ok.status)
    assert confirmed.decision.state == "Blocked" and confirmed.status.spent_eur == 10.0
    condition = confirmed.status.condition(PROMETHEUS_REACHABLE)
    assert (condition.status, condition.reason) == (False, "Unreachable")
    assert "did not answer" in condition.message and "lease ledger" in condition.message
    assert ("Warning", "SpendUnavailable") in [(e.type, e.reason) for e in confirmed.events]
    # The ledger lags (gateways report at renewals): a smaller figure never undoes what Prometheus last said.
    lagging = decide(spec(), ConfirmedSpend(2.0, later, failure), later + HOUR, confirmed.status)
    assert lagging.decision.state == "Blocked" and lagging.status.spent_eur == 10.0
    raised = spec(raises=[TemporaryRaise(amount_eur=5, requested_at=later, expires_at=later + 3 * HOUR, reason="launch",
                                         requested_by="ops")])
    assert decide(raised, ConfirmedSpend(10.0, later, failure), later + HOUR,
                  confirmed.status).decision.state == "Ok"  # a raise still lifts it


def test_unknown_spend_never_unblocks_a_blocked_tenant():
    blocked = decide(spec(), spent(10.0), NOON, None)
    raised = spec(raises=[a_raise(50.0)])
    down = decide(raised, SpendFailure("HttpError", "Prometheus answered HTTP 503"), NOON + HOUR, blocked.status)
    assert down.decision.state == "Blocked" and down.decision.remaining_eur == 0.0
    assert "stays blocked" in down.decision.reason and down.decision.cap_eur == 60.0
    assert "RaiseAdded" in [e.reason for e in down.events]
    # Once spend is known again, the raise unblocks it.
    up = decide(raised, spent(10.0, NOON + 2 * HOUR), NOON + 2 * HOUR, down.status)
    assert up.decision.state == "Ok"


def test_a_remainder_that_cannot_pay_the_smallest_request_blocks_until_it_can():
    """The leases find that what is left (after what is in flight) cannot pay a request: Blocked, though the spend is
    under the cap, as the state change it is; the ledger's finding gone, the spend decides again."""
    unpayable = Unpayable(remainder_eur=0.004, smallest_request_eur=0.01)
    warned = decide(spec(), spent(9.5), NOON, None)
    blocked = decide(spec(), spent(9.9), NOON + HOUR, warned.status, unpayable=unpayable)
    assert (blocked.decision.state, blocked.decision.remaining_eur, blocked.decision.spent_eur) == ("Blocked", 0.0, 9.9)
    assert blocked.decision.reason == (
        "Blocked: acme has 0.004 EUR of its daily cap of 10.00 EUR left today, as its gateways reported their charges, "
        "which cannot pay for its smallest request (0.01 EUR). Requests are served again when the day resets at "
        "2026-06-11 00:00 UTC, or sooner with a temporary raise from an admin (an amount and a reason, for at most "
        "72 h).")
    assert blocked.status.history[-1].message.startswith("Warning -> Blocked: acme has 0.004 EUR")
    assert [(e.type, e.reason) for e in blocked.events] == [("Warning", "StateChanged")]
    assert decide(spec(paused=True), spent(9.9), NOON, None, unpayable=unpayable).decision.state == "Paused"
    over = decide(spec(), spent(10.0), NOON, None, unpayable=unpayable).decision  # the spend's own reason comes first
    assert over.state == "Blocked" and "has spent 10.00 EUR today" in over.reason
    served = decide(spec(), spent(9.9, NOON + 2 * HOUR), NOON + 2 * HOUR, blocked.status)
    assert served.decision.state == "Warning" and served.status.history[-1].message.startswith("Blocked -> Warning")


@pytest.mark.parametrize(("policy", "state", "left"), [("open", "Ok", 10.0), ("closed", "Blocked", 0.0)])
def test_with_no_last_state_unknown_spend_fails_open_or_closed(policy, state, left):
    result = decide(spec(), SpendFailure("Unreachable", "connection refused"), NOON, None, unknown_spend=policy)
    assert result.decision.state == state and result.decision.remaining_eur == left
    assert result.decision.spent_eur is None and result.decision.spend_as_of is None
    assert "cannot be read" in result.decision.reason and f"fail {policy}" in result.decision.reason
    assert result.status.condition(PROMETHEUS_REACHABLE).status is False
    assert [e.reason for e in result.events] == ["SpendUnavailable", "StateChanged"]


@pytest.mark.parametrize(("timezone", "last_evening", "hours"), [
    ("UTC", "2026-06-09T23:59:00", 24),
    ("Europe/Paris", "2026-03-28T23:59:00", 23),
    ("Europe/Paris", "2026-10-24T23:59:00", 25),
    ("America/New_York", "2026-03-07T23:59:00", 23),
    ("America/New_York", "2026-10-31T23:59:00", 25),
    ("Asia/Kolkata", "2026-06-09T23:59:00", 24),
])
def test_the_local_midnight_rolls_the_day_over_and_unblocks(timezone, last_evening, hours):
    zone = ZoneInfo(timezone)
    evening = datetime.fromisoformat(last_evening).replace(tzinfo=zone)
    budget = spec(timezone=timezone)
    blocked = decide(budget, spent(12.0, evening), evening, None)
    assert blocked.decision.state == "Blocked"
    before_midnight = decide(budget, spent(12.0, evening), blocked.status.resets_at - timedelta(seconds=1),
                                blocked.status)
    assert before_midnight.decision.state == "Blocked" and before_midnight.events == ()

    just_after = blocked.status.resets_at + timedelta(seconds=30)
    assert just_after.astimezone(zone).strftime("%H:%M") == "00:00"
    fresh = decide(budget, spent(0.0, just_after), just_after, before_midnight.status)
    assert fresh.decision.state == "Ok" and fresh.decision.remaining_eur == 10.0
    assert fresh.decision.day_started_at == blocked.status.resets_at
    assert fresh.decision.resets_at - fresh.decision.day_started_at == timedelta(hours=hours)
    assert kinds(fresh)[-2:] == ["day_rollover", "state"]
    assert [e.reason for e in fresh.events] == ["DayRollover", "StateChanged"]


def test_a_rollover_while_spend_is_unknown_keeps_a_blocked_tenant_blocked():
    budget = spec(timezone="Europe/Paris")
    evening = datetime(2026, 3, 28, 22, 50, tzinfo=UTC)  # 23:50 in Paris
    blocked = decide(budget, spent(12.0, evening), evening, None)
    ok = decide(spec(tenant="other", timezone="Europe/Paris"), spent(1.0, evening), evening, None)
    after = datetime(2026, 3, 28, 23, 5, tzinfo=UTC)  # 00:05 in Paris, a 23-hour day
    still = decide(budget, SpendFailure("Unreachable", "down"), after, blocked.status)
    assert still.decision.state == "Blocked" and still.decision.spent_eur is None
    assert still.decision.day_started_at == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert "stays Blocked" in still.status.history[-2].message and kinds(still)[-1] == "spend_unavailable"
    # A tenant that was not blocked starts the new day with no figure: the unknown-spend policy applies.
    served = decide(spec(tenant="other", timezone="Europe/Paris"), SpendFailure("Unreachable", "down"), after, ok.status)
    assert served.decision.state == "Ok" and served.decision.spent_eur is None
    assert served.decision.remaining_eur == 10.0 and served.decision.spend_as_of is None
    closed = decide(spec(tenant="other", timezone="Europe/Paris"), SpendFailure("Unreachable", "down"), after, ok.status,
                       unknown_spend="closed")
    assert closed.decision.state == "Blocked"
    # Spend readable again: the new day's spend decides.
    back = decide(budget, spent(0.5, after + HOUR), after + HOUR, still.status)
    assert back.decision.state == "Ok"


def test_history_is_bounded_and_newest_last():
    status = None
    for minute in range(30):
        now = NOON + timedelta(minutes=minute)
        status = decide(spec(), spent(12.0 if minute % 2 else 1.0, now), now, status, history_limit=5).status
    assert len(status.history) == 5
    assert [e.at for e in status.history] == [NOON + timedelta(minutes=m) for m in range(25, 30)]
    assert status.history[-1].message.startswith("Blocked -> Blocked") is False
    assert status.history[-1].message.startswith("Ok -> Blocked")


def test_every_audit_entry_is_an_event():
    last = decide(spec(), spent(9.0), NOON, None).status
    budget = spec(paused=True, raises=[a_raise(1.0), a_raise(1.0, hours=80, by="x")])
    result = decide(budget, SpendFailure("Unreachable", "down"), NOON + HOUR, last)
    added = result.status.history[len(last.history):]
    assert len(result.events) == len(added) == 4
    assert [e.message for e in result.events] == [e.message for e in added]


def test_status_round_trips_through_json():
    budget = spec(timezone="America/New_York", raises=[a_raise(2.0)])
    first = decide(budget, spent(11.0), NOON, None)
    status = decide(budget, SpendFailure("BadAnswer", "not JSON"), NOON + HOUR, first.status).status
    data = json.loads(json.dumps(status.to_dict()))
    assert BudgetStatus.from_dict(data) == status
    assert data["dayStartedAt"] == "2026-06-10T04:00:00Z" and data["resetsAt"] == "2026-06-11T04:00:00Z"
    assert data["conditions"][0] == {"type": "PrometheusReachable", "status": "False", "reason": "BadAnswer",
                                     "message": "not JSON", "lastTransitionTime": "2026-06-10T13:00:00Z"}
    assert set(data) == {"state", "spentEur", "capEur", "remainingEur", "dayStartedAt", "resetsAt", "lastReadAt",
                         "spendAsOf", "conditions", "history", "auditedRaises"}
    never_read = decide(budget, SpendFailure("Unreachable", "down"), NOON, None).status
    assert BudgetStatus.from_dict(json.loads(json.dumps(never_read.to_dict()))) == never_read
