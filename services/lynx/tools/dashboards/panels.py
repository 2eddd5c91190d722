"""Panel helpers over the Grafana Foundation SDK's typed builders: every panel reads a datasource variable, sets units,
and documents its source. The SDK's release is the one generated from the schemas of the Grafana the chart deploys
(pyproject's dev extra), so a panel option Grafana would not load does not build."""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import (
    barchart, bargauge, common as common_builders, dashboard as dashboard_builders, histogram, piechart, prometheus,
    stat as stat_builders, table as table_builders, text as text_builders, timeseries as timeseries_builders,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard as models
from grafana_foundation_sdk.models.piechart import PieChartLegendValues, PieChartType
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.text import TextMode

from lynx.telemetry.metrics import COMPLETION_ENDPOINTS as COMPLETION_ENDPOINTS  # the panels' queries use it

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")
EXACT = "Prometheus histograms and counters: every request is counted (exact, not sampled)."
PANEL_WIDTH, PANEL_HEIGHT = 12, 8  # two panels a row


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, *, exemplar: bool = False,
           table: bool = False, heatmap: bool = False) -> prometheus.Dataquery:
    """One PromQL query; ``exemplar`` asks for its exemplars too (Grafana links their trace ids to Jaeger through
    the Prometheus datasource's exemplar settings), ``table`` returns label columns for a table panel, ``heatmap``
    turns a histogram's cumulative ``le`` buckets into per-bucket counts."""
    query = (prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE))
    query = query.instant() if instant else query.range()
    if exemplar:
        query = query.exemplar(True)
    if table:
        query = query.format(PromQueryFormat.TABLE)
    if heatmap:
        query = query.format(PromQueryFormat.HEATMAP)
    return query


def thresholds(red_above: float | None = None) -> dashboard_builders.ThresholdsConfig:
    steps = [models.Threshold(None, "green")]
    if red_above is not None:
        steps.append(models.Threshold(red_above, "red"))
    return dashboard_builders.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps)


def legend() -> common_builders.VizLegendOptions:
    return (common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM).show_legend(True))


def tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def with_common(panel, title: str, description: str, targets: list[prometheus.Dataquery], unit: str):
    """What every query panel has: its title, what it shows and where from, the datasource variable, a unit."""
    return (panel.title(title).description(description).datasource(DATASOURCE).targets(targets).unit(unit)
            .span(PANEL_WIDTH).height(PANEL_HEIGHT))


def stacking(stacked: bool) -> common_builders.StackingConfig:
    return common_builders.StackingConfig().mode(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE) \
        .group("A")


def timeseries(title: str, description: str, targets: list[prometheus.Dataquery], unit: str, *,
               stacked: bool = False, red_above: float | None = None,
               bars: bool = False) -> timeseries_builders.Panel:
    """Lines over time (``bars``: a bar per step), stacked or not, with a red threshold line if ``red_above``."""
    panel = (with_common(timeseries_builders.Panel(), title, description, targets, unit)
             .thresholds(thresholds(red_above)).stacking(stacking(stacked))
             .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
             .fill_opacity(80 if bars else 40 if stacked else 10).line_width(1)
             .thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(
                 common.GraphThresholdsStyleMode.LINE if red_above is not None else common.GraphThresholdsStyleMode.OFF))
             .legend(legend()).tooltip(tooltip()))
    return panel


def on_right_axis(panel, ref: str, unit: str, red_above: float | None = None):
    """Query ``ref``'s series in ``unit`` on an axis of its own, on the right, with a red line at ``red_above``."""
    properties = [models.DynamicConfigValue("unit", unit), models.DynamicConfigValue("custom.axisPlacement", "right")]
    if red_above is not None:
        properties += [models.DynamicConfigValue("thresholds", thresholds(red_above).build().to_json()),
                       models.DynamicConfigValue("custom.thresholdsStyle", {"mode": "line"})]
    return panel.override_by_query(ref, properties)


def stat(title: str, description: str, targets: list[prometheus.Dataquery], unit: str, *,
         red_above: float | None = None, mappings: list | None = None) -> stat_builders.Panel:
    panel = (with_common(stat_builders.Panel(), title, description, targets, unit).thresholds(thresholds(red_above))
             .color_scheme(dashboard_builders.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
             .reduce_options(last_value()).color_mode(common.BigValueColorMode.BACKGROUND)
             .graph_mode(common.BigValueGraphMode.NONE).text_mode(common.BigValueTextMode.AUTO))
    return panel.mappings(mappings) if mappings else panel


def status(ok_text: str) -> list[models.ValueMap]:
    """A count of failures read as a status: 0 shows ``ok_text`` (in green); any other count shows as itself."""
    return [models.ValueMap({"0": models.ValueMappingResult(text=ok_text, color="green", index=0)})]


def bars(title: str, description: str, targets: list[prometheus.Dataquery], unit: str) -> bargauge.Panel:
    """Horizontal bars, one per series, at its last value."""
    return (with_common(bargauge.Panel(), title, description, targets, unit).thresholds(thresholds())
            .display_mode(common.BarGaugeDisplayMode.BASIC).orientation(common.VizOrientation.HORIZONTAL)
            .show_unfilled(True).reduce_options(last_value()))


def transformation(kind: str, options: dict) -> models.DataTransformerConfig:
    return models.DataTransformerConfig(id_val=kind, options=options)


def stacked_bars_by_row(title: str, description: str, targets: list[prometheus.Dataquery], unit: str,
                        names: dict[str, str], label: str) -> barchart.Panel:
    """One stacked bar per instant table-format target, side by side, each split into a segment per value of the label
    ``label``: the targets are merged into one row per ``label`` value, their values renamed by ``names`` ("Value #A":
    "budget") and the table transposed so that each target is a bar and each ``label`` value a stacked series."""
    return (with_common(barchart.Panel(), title, description, targets, unit).thresholds(thresholds())
            .with_transformation(transformation("merge", {}))
            .with_transformation(transformation("organize", {
                "excludeByName": {"Time": True}, "indexByName": {label: 0, **{f: i + 1 for i, f in enumerate(names)}},
                "renameByName": names}))
            .with_transformation(transformation("transpose", {}))
            .stacking(common.StackingMode.NORMAL).orientation(common.VizOrientation.VERTICAL)
            .show_value(common.VisibilityMode.AUTO).fill_opacity(80).legend(legend()).tooltip(tooltip()))


def bucket_histogram(title: str, description: str, buckets: prometheus.Dataquery,
                     marks: list[prometheus.Dataquery], unit: str) -> histogram.Panel:
    """A Prometheus histogram's buckets (a heatmap-format target) drawn as a histogram; ``marks`` (quantiles, say)
    are not binned but read in the legend, by their values, in the histogram's unit."""
    panel = (with_common(histogram.Panel(), title, description, [buckets, *marks], unit).thresholds(thresholds())
             .combine(False).fill_opacity(80).legend(legend().calcs(["lastNotNull"])).tooltip(tooltip()))
    for mark in marks:
        panel = panel.override_by_query(mark.build().ref_id, [
            models.DynamicConfigValue("custom.hideFrom", {"viz": True, "legend": False, "tooltip": False})])
    return panel


def pie(title: str, description: str, targets: list[prometheus.Dataquery], unit: str) -> piechart.Panel:
    """Each series' last value as a slice; the legend gives values and shares."""
    return (with_common(piechart.Panel(), title, description, targets, unit).thresholds(thresholds())
            .color_scheme(dashboard_builders.FieldColor().mode(models.FieldColorModeId.PALETTE_CLASSIC))
            .pie_type(PieChartType.PIE).reduce_options(last_value()).tooltip(tooltip())
            .legend(piechart.PieChartLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                    .placement(common.LegendPlacement.RIGHT).show_legend(True)
                    .values([PieChartLegendValues.VALUE, PieChartLegendValues.PERCENT])))


def table(title: str, description: str, targets: list[prometheus.Dataquery], columns: dict[str, tuple[str, str]],
          sort_by: str) -> table_builders.Panel:
    """Instant table-format targets merged into one row per shared label set (e.g. one row per tenant).
    ``columns`` maps each target's value ("Value #<refId>") or a label to its (header, unit); other fields are hidden."""
    names = {field: header for field, (header, _) in columns.items()}
    panel = (with_common(table_builders.Panel(), title, description, targets, "none").thresholds(thresholds())
             .with_transformation(transformation("merge", {}))
             .with_transformation(transformation("filterFieldsByName", {"include": {"names": list(columns)}}))
             .with_transformation(transformation("organize", {
                 "indexByName": {field: i for i, field in enumerate(columns)}, "renameByName": names}))
             .with_transformation(transformation("sortBy", {"sort": [{"field": sort_by, "desc": True}]}))
             .show_header(True).cell_height(common.TableCellHeight.SM)
             .footer(common_builders.TableFooterOptions().show(False).reducer([])))
    for header, unit in columns.values():
        if unit:
            panel = panel.override_by_name(header, [models.DynamicConfigValue("unit", unit)])
    return panel


def over(panel, time_from: str, interval: str | None = None):
    """The panel over its own time range (``7d``, or ``now/d`` for today so far), at ``interval`` steps at least."""
    panel = panel.time_from(time_from)
    return panel.interval(interval) if interval else panel


def text(title: str, description: str, markdown: str) -> text_builders.Panel:
    return (text_builders.Panel().title(title).description(description).mode(TextMode.MARKDOWN).content(markdown)
            .span(PANEL_WIDTH).height(PANEL_HEIGHT))


def quantiles(metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99),
              window: str = "$__rate_interval", *, instant: bool = False,
              first_ref: str = "A") -> list[prometheus.Dataquery]:
    group = f"le, {by}" if by else "le"
    legend_suffix = f" {{{{{by}}}}}" if by else ""
    return [target(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{window}])))",
                   f"p{int(q * 100)}{legend_suffix}", ref=chr(ord(first_ref) + i), instant=instant)
            for i, q in enumerate(qs)]


def label_filter(name: str, label: str, metric: str) -> dashboard_builders.QueryVariable:
    """A multi-value variable over the values of the label ``name`` of ``metric``; All matches any."""
    return (dashboard_builders.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query(f"label_values({metric}, {name})").multi(True).include_all(True).all_value(".+")
            .current(models.VariableOption(text="All", value="$__all"))
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED).hide(models.VariableHide.DONT_HIDE))


def dashboard(uid: str, title: str, description: str, panels: list[Builder],
              filters: tuple[dashboard_builders.QueryVariable, ...] = ()) -> dict:
    """The dashboard as Grafana's JSON model: panels two a row, numbered in order."""
    board = (dashboard_builders.Dashboard(title).uid(uid).description(description).tags(["lynx"]).timezone("browser")
             .editable().version(1).refresh("30s").time("now-1h", "now")
             .with_variable(dashboard_builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
                            .hide(models.VariableHide.DONT_HIDE)))
    for variable in filters:
        board = board.with_variable(variable)
    for number, panel in enumerate(panels, start=1):
        board = board.with_panel(panel.id(number))
    return json.loads(JSONEncoder().encode(board.build()))
