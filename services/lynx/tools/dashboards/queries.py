"""The PromQL behind every dashboard panel, with Grafana's variables filled in as a dashboard's default view has them,
so that something other than Grafana (a benchmark, a test) can ask a Prometheus what each panel would show."""

from __future__ import annotations

from typing import NamedTuple

from lynx.tools.dashboards.build import all_dashboards

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", '"$job"': '".+"',
                     "$job": ".+", '"$tenant"': '".+"', '"$model_name"': '".+"'}


class PanelQuery(NamedTuple):
    dashboard: str
    panel: str
    expr: str
    instant: bool  # Grafana asks for the value at the end of the time range only (stats, bar gauges, tables)


def expand(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def panel_queries(dashboards: dict[str, dict] | None = None) -> list[PanelQuery]:
    """Every target of every panel of ``dashboards`` (default: lynx's own), expanded."""
    boards = all_dashboards() if dashboards is None else dashboards
    return [PanelQuery(name, panel["title"], expand(target["expr"]), bool(target.get("instant")))
            for name, board in boards.items() for panel in board["panels"] for target in panel.get("targets", [])]
