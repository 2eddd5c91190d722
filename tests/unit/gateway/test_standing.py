"""The budget an answer carries: the standing from a decision and this gateway's charges since, the Warning notice,
and the headers a client reads back."""

from datetime import UTC, datetime, timedelta

from lynx.contracts.budgets import BudgetStanding, TenantDecision
from lynx.gateway.standing import notice, standing_of

MIDNIGHT = datetime(2026, 6, 10, 22, 0, tzinfo=UTC)


def decision(state: str = "Ok", cap: float = 1.0, spent: float = 0.25, remaining: float = 0.75) -> TenantDecision:
    return TenantDecision(tenant="acme", state=state, cap_eur=cap, spent_eur=spent, remaining_eur=remaining,
                          day_started_at=MIDNIGHT - timedelta(days=1), resets_at=MIDNIGHT,
                          spend_as_of=MIDNIGHT - timedelta(hours=3), reason="r")


def test_remaining_is_the_decisions_less_what_this_gateway_charged_since_never_negative():
    assert standing_of(decision(), 0.125).remaining_eur == 0.625
    assert standing_of(decision(remaining=0.1), 0.5).remaining_eur == 0.0
    assert standing_of(decision("Blocked", remaining=0.0), 0.0).remaining_eur == 0.0
    standing = standing_of(decision("Warning"), 0.0)
    assert (standing.state, standing.cap_eur, standing.resets_at) == ("Warning", 1.0, MIDNIGHT)


def test_the_notice_is_given_in_warning_only_and_says_what_is_used_left_and_when_it_resets():
    warned = notice("acme", standing_of(decision("Warning", spent=0.85, remaining=0.15), 0.05))
    assert "acme" in warned and "90 %" in warned and "0.1 EUR" in warned and "2026-06-10T22:00:00Z" in warned
    assert notice("acme", standing_of(decision("Ok"), 0.0)) is None
    assert notice("acme", standing_of(decision("Blocked", remaining=0.0), 0.0)) is None
    assert notice("acme", None) is None
    assert "all of" in notice("acme", standing_of(decision("Warning", cap=0.0, spent=0.0, remaining=0.0), 0.0))


def test_headers_carry_the_standing_exactly_and_the_seconds_to_the_reset():
    standing = BudgetStanding(state="Warning", cap_eur=2e-4, remaining_eur=1 / 3 * 1e-4, resets_at=MIDNIGHT)
    headers = standing.headers(MIDNIGHT.timestamp() - 90.5)
    assert headers["x-lynx-budget-reset"] == "2026-06-10T22:00:00Z"
    assert headers["x-lynx-budget-reset-seconds"] == "91"
    assert BudgetStanding.from_headers(headers) == standing
    assert BudgetStanding.from_headers({"x-request-id": "r"}) is None
