"""Structure of the dashboards; their queries are run against Prometheus in tests/integration."""

import json
import re
import tomllib
from importlib.metadata import version

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from lynx.tools.dashboards.build import DASHBOARDS_DIR, REPO, TRACES_KEPT, all_dashboards, cpqu_table, render

PANEL_TYPES_WITH_QUERIES = {"timeseries", "stat", "bargauge", "barchart", "histogram", "piechart", "table"}


def committed() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_committed_json_is_what_the_builder_makes():
    for name, board in all_dashboards().items():
        assert (DASHBOARDS_DIR / f"{name}.json").read_text() == render(board), \
            f"dashboards/{name}.json is stale: run `lynx dashboards build`"
    assert set(committed()) == set(all_dashboards())


def within(part, whole) -> bool:
    """Every key and value of ``part`` is in ``whole`` (which may hold more: defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and within(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(part) == len(whole) and all(map(within, part, whole))
    return part == whole


def test_every_field_of_the_committed_json_is_one_the_sdk_s_grafana_schema_knows():
    """Decoding into the SDK's typed models drops what Grafana's schema has no field for; nothing may be dropped."""
    register_default_plugins()
    for name, board in committed().items():
        decoded = json.loads(JSONEncoder().encode(Dashboard.from_json(board)))
        assert within(board, decoded), f"dashboards/{name}.json has fields Grafana's dashboard schema does not know"


def test_the_installed_sdk_is_the_release_pyproject_pins():
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    (pin,) = [d for d in dev if d.startswith("grafana-foundation-sdk")]
    assert pin == f"grafana-foundation-sdk=={version('grafana-foundation-sdk')}"


def panel(board: str, title_start: str) -> dict:
    (found,) = [p for p in committed()[board]["panels"] if p["title"].startswith(title_start)]
    return found


def test_the_design_s_charts():
    per_stage = panel("capstone", "Per-stage latency")
    custom = per_stage["fieldConfig"]["defaults"]["custom"]
    assert custom["drawStyle"] == "bars" and custom["stacking"]["mode"] == "normal"
    assert '"stage", "other"' in per_stage["targets"][0]["expr"]

    budget = panel("capstone", "Latency budget vs actual")
    assert budget["type"] == "barchart" and budget["options"]["stacking"] == "normal"
    assert [t["id"] for t in budget["transformations"]][-1] == "transpose"
    assert {t["format"] for t in budget["targets"]} == {"table"} and len(budget["targets"]) == 2

    cost = panel("capstone", "Cost per request")
    assert cost["type"] == "histogram" and cost["targets"][0]["format"] == "heatmap"
    assert [t["legendFormat"] for t in cost["targets"][1:]] == ["p50", "p95"]
    assert all("[1h]" in t["expr"] for t in cost["targets"])

    pie, identity = panel("capstone", "Cost decomposition"), panel("capstone", "Cost identity violations")
    assert pie["type"] == "piechart" and identity["type"] == "stat"
    assert pie["gridPos"]["y"] == identity["gridPos"]["y"] and identity["id"] == pie["id"] + 1, "side by side"

    errors = panel("capstone", "Error rate")
    assert errors["fieldConfig"]["defaults"]["unit"] == "reqps" and 'status=~"5.."' in errors["targets"][0]["expr"]
    assert errors["targets"][1]["legendFormat"] == "5xx share"


def test_uids_are_unique_and_stable():
    uids = [board["uid"] for board in committed().values()]
    assert len(uids) == len(set(uids)) and all(uid.startswith("lynx-") for uid in uids)


def test_capstone_has_the_ten_panels_of_the_design_and_the_sample_rate_of_its_traces():
    titles = [p["title"] for p in committed()["capstone"]["panels"]]
    assert len(titles) == 11
    for word in ("Request rate", "Error rate", "p50 / p95 / p99", "Per-stage latency", "budget", "Cost per request",
                 "Cost decomposition", "CpQU", "Orphan spans", "identity violations", TRACES_KEPT):
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


def fed_by_traces(panel: dict) -> bool:
    """Exemplars (trace links) or the auditor's reading of the trace store."""
    return any(t.get("exemplar") or "lynx_trace_orphan_spans" in t["expr"] for t in panel.get("targets", []))


def test_trace_fed_panels_point_to_the_sample_rate_panel_fed_by_the_running_sampler():
    trace_fed = 0
    for board in committed().values():
        panels = [p for p in board["panels"] if fed_by_traces(p)]
        trace_fed += len(panels)
        if not panels:
            continue
        for fed in panels:
            assert f'"{TRACES_KEPT}" panel' in fed["description"], fed["title"]
        (kept,) = [p for p in board["panels"] if p["title"] == TRACES_KEPT]
        exprs = [t["expr"] for t in kept["targets"]]
        assert any("lynx_traced_requests_total" in e and "/ sum(rate(lynx_request_total" in e for e in exprs)
        assert any("lynx_trace_sampler_ratio" in e for e in exprs)
        assert kept["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert trace_fed == 2  # orphan spans, the failed requests with trace links (so the test cannot pass on nothing)
    for board in committed().values():
        for panel in board["panels"]:
            assert "by default" not in panel.get("description", ""), "a sample rate assumed, not read"


def test_the_admin_overview_s_spend_and_token_panels_follow_its_tenant_and_model_filters():
    tenants = committed()["tenants"]
    assert {v["name"] for v in tenants["templating"]["list"]} >= {"tenant", "model_name"}
    ledger_queries = [t["expr"] for p in tenants["panels"] for t in p.get("targets", [])
                      if re.search(r"lynx_(tokens|tenant_cost_eur)_total", t["expr"])]
    assert any("lynx_tokens_total" in expr for expr in ledger_queries)
    for expr in ledger_queries:
        for selector in re.findall(r"lynx_(?:tokens|tenant_cost_eur)_total(\{[^}]*\})?", expr):
            assert 'tenant=~"$tenant"' in selector and 'model_name=~"$model_name"' in selector, expr
