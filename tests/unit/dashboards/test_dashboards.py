"""Structure of the dashboards; their queries are run against Prometheus in tests/integration."""

import json
import re

from lynx.tools.dashboards.build import DASHBOARDS_DIR, all_dashboards, cpqu_table, render

PANEL_TYPES_WITH_QUERIES = {"timeseries", "stat", "bargauge"}


def committed() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_committed_json_is_what_the_builder_makes():
    for name, board in all_dashboards().items():
        assert (DASHBOARDS_DIR / f"{name}.json").read_text() == render(board), \
            f"dashboards/{name}.json is stale: run `lynx dashboards build`"
    assert set(committed()) == set(all_dashboards())


def test_uids_are_unique_and_stable():
    uids = [board["uid"] for board in committed().values()]
    assert len(uids) == len(set(uids)) and all(uid.startswith("lynx-") for uid in uids)


def test_capstone_has_the_ten_panels_of_the_design():
    titles = [p["title"] for p in committed()["capstone"]["panels"]]
    assert len(titles) == 10
    for word in ("Request rate", "Error rate", "p50 / p95 / p99", "Per-stage latency", "budget", "Cost per request",
                 "Cost decomposition", "CpQU", "Orphan spans", "identity violations"):
        assert any(word in title for title in titles), word


def test_every_query_panel_uses_the_datasource_variable_and_sets_a_unit():
    for board in committed().values():
        assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in board["templating"]["list"])
        for panel in board["panels"]:
            if panel["type"] not in PANEL_TYPES_WITH_QUERIES:
                continue
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["fieldConfig"]["defaults"]["unit"]
            assert panel["description"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert "[5m]" not in target["expr"] and "[1m]" not in target["expr"], \
                    "use $__rate_interval, not a fixed rate window"


def test_panel_ids_are_unique_within_a_board():
    for board in committed().values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))


def test_the_cpqu_panel_is_a_copy_of_the_costs_table():
    panel = next(p for p in committed()["capstone"]["panels"] if "CpQU" in p["title"])
    assert panel["type"] == "text" and panel["options"]["content"] == cpqu_table()
    assert re.search(r"\| ISO week \|", panel["options"]["content"])


def test_trace_fed_panels_state_the_sample_rate():
    capstone = committed()["capstone"]
    for panel in capstone["panels"]:
        if "Orphan" in panel["title"] or "Per-stage latency" in panel["title"]:
            assert "sampled at" in panel["description"]


def test_the_admin_overview_s_spend_and_token_panels_follow_its_tenant_and_model_filters():
    tenants = committed()["tenants"]
    assert {v["name"] for v in tenants["templating"]["list"]} >= {"tenant", "model_name"}
    ledger_queries = [t["expr"] for p in tenants["panels"] for t in p.get("targets", [])
                      if re.search(r"lynx_(tokens|tenant_cost_eur)_total", t["expr"])]
    assert any("lynx_tokens_total" in expr for expr in ledger_queries)
    for expr in ledger_queries:
        for selector in re.findall(r"lynx_(?:tokens|tenant_cost_eur)_total(\{[^}]*\})?", expr):
            assert 'tenant=~"$tenant"' in selector and 'model_name=~"$model_name"' in selector, expr
