"""Charts drawn on the server from the figures the page shows, as inline SVG (matplotlib's SVG backend: no script,
nothing fetched by the browser). Text stays text (``svg.fonttype: none``) so that it reads and scales."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime

from matplotlib import rc_context
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lynx_budget.console.data import WaterfallRow

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "lynx-console", "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False}
COLOUR = "#2b6cb0"


def svg(figure: Figure, label: str) -> str:
    """The figure as an <svg> element (no XML prolog) labelled for screen readers."""
    out = io.StringIO()
    FigureCanvasSVG(figure).print_svg(out)
    text = out.getvalue()
    return text[text.index("<svg"):].replace("<svg ", f'<svg role="img" aria-label="{escape_attribute(label)}" ', 1)


def escape_attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, unit: str) -> str:
    with rc_context(STYLE):
        figure = Figure(figsize=(5, 1.2 + 0.3 * max(len(labels), 1)))
        axes = figure.subplots()
        positions = range(len(labels))
        axes.barh(list(positions), list(values), color=COLOUR)
        axes.xaxis.set_major_locator(MaxNLocator(4))  # EUR amounts are long numbers: few ticks, never overlapping
        axes.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        axes.set_yticks(list(positions), list(labels))
        axes.invert_yaxis()
        axes.set_xlabel(unit)
        axes.set_title(title, loc="left")
        figure.tight_layout()
        return svg(figure, title)


def daily_chart(points: Sequence[tuple[datetime, float]], title: str, unit: str) -> str:
    with rc_context(STYLE):
        figure = Figure(figsize=(5, 2.2))
        axes = figure.subplots()
        axes.bar([p[0].strftime("%m-%d") for p in points], [p[1] for p in points], color=COLOUR)
        axes.set_ylabel(unit)
        axes.set_title(title, loc="left")
        axes.tick_params(axis="x", labelrotation=60, labelsize=7)
        figure.tight_layout()
        return svg(figure, title)


def waterfall_chart(rows: Sequence[WaterfallRow], title: str) -> str:
    with rc_context(STYLE):
        figure = Figure(figsize=(7, 0.5 + 0.28 * max(len(rows), 1)))
        axes = figure.subplots()
        positions = list(range(len(rows)))
        axes.barh(positions, [max(r.duration_ms, 0.01) for r in rows], left=[r.offset_ms for r in rows],
                  color=COLOUR)
        axes.set_yticks(positions, [f"{'  ' * r.depth}{r.service}: {r.name}" for r in rows])
        axes.invert_yaxis()
        axes.xaxis.set_major_locator(MaxNLocator(6))
        axes.set_xlabel("ms since the request started")
        axes.set_title(title, loc="left")
        figure.tight_layout()
        return svg(figure, title)
