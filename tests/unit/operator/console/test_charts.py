"""Charts are inline SVG drawn from the figures given, with their text kept as text and a label for screen readers."""

from __future__ import annotations

from datetime import UTC, datetime

from lynx_budget.console.charts import bar_chart, daily_chart


def test_a_bar_chart_is_a_labelled_svg_element_naming_its_bars():
    drawn = bar_chart(["acme", "globex"], [0.5, 0.25], "Spend today by tenant", "EUR")
    assert drawn.startswith("<svg ") and drawn.rstrip().endswith("</svg>")
    assert 'role="img" aria-label="Spend today by tenant"' in drawn
    assert "acme" in drawn and "globex" in drawn  # svg.fonttype none: labels are <text>, not glyph paths
    assert 'href="http' not in drawn and "url(http" not in drawn and "@import" not in drawn  # nothing to fetch


def test_an_empty_series_still_draws():
    assert daily_chart([], "Tokens per day", "tokens").startswith("<svg ")
    assert "06-10" in daily_chart([(datetime(2026, 6, 10, tzinfo=UTC), 3.0)], "EUR per day", "EUR")
