"""Panel helpers: every panel reads a datasource variable, sets units, and documents its source."""

from __future__ import annotations

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
COMPLETION_ENDPOINTS = 'endpoint=~"/v1/(chat/)?completions"'
EXACT = "Prometheus histograms and counters: every request is counted (exact, not sampled)."


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    return {"refId": ref, "expr": expr, "legendFormat": legend or "__auto", "datasource": DATASOURCE,
            "instant": instant, "range": not instant}


def thresholds(red_above: float | None) -> dict:
    steps = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {"mode": "absolute", "steps": steps}


def timeseries(title: str, description: str, targets: list[dict], unit: str, *, stacked: bool = False,
               red_above: float | None = None) -> dict:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {
            "unit": unit, "thresholds": thresholds(red_above),
            "custom": {"stacking": {"mode": "normal" if stacked else "none", "group": "A"},
                       "fillOpacity": 40 if stacked else 10, "lineWidth": 1,
                       "thresholdsStyle": {"mode": "line" if red_above is not None else "off"}}},
            "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, description: str, targets: list[dict], unit: str, *, red_above: float | None = None) -> dict:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DATASOURCE, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(red_above), "color": {"mode": "thresholds"}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "textMode": "auto"},
    }


def bucket_bars(title: str, description: str, targets: list[dict], quantile_unit: str) -> dict:
    """Bars of a histogram's bucket counts, with quantile targets (legend p..) shown in ``quantile_unit``."""
    return {
        "type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": "short", "thresholds": thresholds(None)},
                        "overrides": [{"matcher": {"id": "byRegexp", "options": "^p[0-9]+$"},
                                       "properties": [{"id": "unit", "value": quantile_unit}]}]},
        "options": {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def text(title: str, description: str, markdown: str) -> dict:
    return {"type": "text", "title": title, "description": description,
            "options": {"mode": "markdown", "content": markdown}}


def quantiles(metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99),
              window: str = "$__rate_interval") -> list[dict]:
    group = f"le, {by}" if by else "le"
    legend_suffix = f" {{{{{by}}}}}" if by else ""
    return [target(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{window}])))",
                   f"p{int(q * 100)}{legend_suffix}", ref=chr(ord("A") + i)) for i, q in enumerate(qs)]


def layout(panels: list[dict], width: int = 12, height: int = 8) -> list[dict]:
    """Two panels a row; ids and positions assigned in order."""
    placed = []
    for index, panel in enumerate(panels):
        placed.append({"id": index + 1, "gridPos": {"h": height, "w": width, "x": (index % 2) * width,
                                                    "y": (index // 2) * height}, **panel})
    return placed


def dashboard(uid: str, title: str, description: str, panels: list[dict], with_job: bool = False) -> dict:
    variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0, "refresh": 1}]
    if with_job:
        variables.append({"name": "job", "label": "Service", "type": "query", "datasource": DATASOURCE,
                          "query": {"query": "label_values(lynx_request_total, job)", "refId": "job"},
                          "definition": "label_values(lynx_request_total, job)", "includeAll": True, "multi": True,
                          "allValue": ".+", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "hide": 0})
    return {"uid": uid, "title": title, "description": description, "tags": ["lynx"], "timezone": "browser",
            "editable": True, "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "templating": {"list": variables},
            "annotations": {"list": []}, "panels": layout(panels)}
