"""What the chaos script prints, and how it reads its command line."""

from __future__ import annotations

import argparse

from lynx.tools.chaos.checks import Check
from lynx.tools.chaos.cli import add_chaos_command, selected
from lynx.tools.chaos.report import scenario_report, summary, table
from lynx.tools.chaos.scenarios import ScenarioResult
from lynx.tools.chaos.targets import Disruption, service_url


def result(checks: list[Check], error: str | None = None) -> ScenarioResult:
    restart = Disruption("restart", "gateway", "pid 7", 100.0, 2.5, 4.0)
    return ScenarioResult(2, "graceful restart", 100.0, 130.0, [], [restart], checks, ["a note"], error)


def test_a_table_aligns_its_columns():
    assert table(("a", "bb"), [("ccc", "d")]).splitlines() == ["a    bb", "---  --", "ccc  d"]


def test_a_scenario_passes_only_with_every_check_green_and_says_why_not():
    green = result([Check("orphan spans", "0 in 9 spans of 3 traces", "0", True)])
    assert green.ok and "Scenario 2: graceful restart — PASS" in scenario_report(green)
    assert "restart gateway (pid 7), gone after 2.5 s, ready after 4.0 s" in scenario_report(green)
    red = result([Check("orphan spans", "1 in 9 spans of 3 traces", "0", False, "abc lynx-gateway 'POST'")])
    text = scenario_report(red)
    assert not red.ok and "— FAIL" in text and "FAILED" in text and "orphan spans: abc lynx-gateway 'POST'" in text
    refused = result([], "refused: fault injection is off")
    assert not refused.ok and "error: refused: fault injection is off" in scenario_report(refused)
    assert [line.split()[-1] for line in summary([green, red]).splitlines()[2:]] == ["PASS", "FAIL"]


def test_scenarios_are_chosen_by_number_or_all():
    parser = argparse.ArgumentParser()
    add_chaos_command(parser.add_subparsers())
    assert selected(parser.parse_args(["chaos"])) == [1, 2, 3, 4, 5]
    assert selected(parser.parse_args(["chaos", "--scenario", "4", "--scenario", "1"])) == [1, 4]
    args = parser.parse_args(["chaos", "--scenario", "2", "--tail", "3", "--trace-store-outage", "8"])
    assert (args.tail_s, args.trace_store_outage_s, args.lead_s) == (3.0, 8.0, 10.0)


def test_a_local_service_is_reached_where_its_settings_say():
    assert service_url("gateway", {"LYNX_GATEWAY_PORT": "8080"}) == "http://127.0.0.1:8080"
    assert service_url("decoder", {"LYNX_DECODER_PORT": "9", "LYNX_DECODER_HOST": "0.0.0.0"}) == "http://127.0.0.1:9"
