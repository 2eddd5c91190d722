"""Panel helpers: every panel reads a datasource variable, sets units, and documents its source."""

from __future__ import annotations

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
COMPLETION_ENDPOINTS = 'endpoint=~"/v1/(chat/)?completions"'
EXACT = "Prometheus histograms and counters: every request is counted (exact, not sampled)."


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, *, exemplar: bool = False,
           table: bool = False) -> dict:
    """One PromQL query; ``exemplar`` asks for its exemplars too (Grafana links their trace ids to Jaeger through
    the Prometheus datasource's exemplar settings), ``table`` returns label columns for a table panel."""
    query = {"refId": ref, "expr": expr, "legendFormat": legend or "__auto", "datasource": DATASOURCE,
             "instant": instant, "range": not instant}
    if exemplar:
        query["exemplar"] = True
    if table:
        query["format"] = "table"
    return query


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


def bars(title: str, description: str, targets: list[dict], unit: str, overrides: tuple[dict, ...] = ()) -> dict:
    """Horizontal bars, one per series, at its last value."""
    return {
        "type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(None)}, "overrides": list(overrides)},
        "options": {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def bucket_bars(title: str, description: str, targets: list[dict], quantile_unit: str) -> dict:
    """Bars of a histogram's bucket counts, with quantile targets (legend p..) shown in ``quantile_unit``."""
    return bars(title, description, targets, "short", ({"matcher": {"id": "byRegexp", "options": "^p[0-9]+$"},
                                                         "properties": [{"id": "unit", "value": quantile_unit}]},))


def table(title: str, description: str, targets: list[dict], columns: dict[str, tuple[str, str]],
          sort_by: str) -> dict:
    """Instant table-format targets merged into one row per shared label set (e.g. one row per tenant).
    ``columns`` maps each target's value ("Value #<refId>") or a label to its (header, unit); other fields are hidden."""
    names = {field: header for field, (header, _) in columns.items()}
    return {
        "type": "table", "title": title, "description": description, "datasource": DATASOURCE, "targets": targets,
        "fieldConfig": {"defaults": {"unit": "none", "thresholds": thresholds(None)},
                        "overrides": [{"matcher": {"id": "byName", "options": header},
                                       "properties": [{"id": "unit", "value": unit}]}
                                      for header, unit in columns.values() if unit]},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "filterFieldsByName", "options": {"include": {"names": list(columns)}}},
            {"id": "organize", "options": {"indexByName": {field: i for i, field in enumerate(columns)},
                                           "renameByName": names}},
            {"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": True}]}},
        ],
        "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    }


def over(panel: dict, time_from: str, interval: str | None = None) -> dict:
    """The panel over its own time range (``7d``, or ``now/d`` for today so far), at ``interval`` steps at least."""
    return {**panel, "timeFrom": time_from, **({"interval": interval} if interval else {})}


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


def label_filter(name: str, label: str, metric: str) -> dict:
    """A multi-value variable over the values of the label ``name`` of ``metric``; All matches any."""
    query = f"label_values({metric}, {name})"
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": name}, "definition": query, "includeAll": True, "multi": True,
            "allValue": ".+", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "hide": 0}


def dashboard(uid: str, title: str, description: str, panels: list[dict], filters: tuple[dict, ...] = ()) -> dict:
    variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0, "refresh": 1}, *filters]
    return {"uid": uid, "title": title, "description": description, "tags": ["lynx"], "timezone": "browser",
            "editable": True, "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "templating": {"list": variables},
            "annotations": {"list": []}, "panels": layout(panels)}
