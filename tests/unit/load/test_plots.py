"""The load report's figures: every series where a reader can see it."""

from dataclasses import replace
from itertools import combinations

import pytest

from lynx.tools.load.plots import PLOTS, write_plots

from .test_report import failed, record

TOKENS_PER_ANSWER = 8


def steady_run(failures: int = 0):
    """Two answers a second for 20 s, each with the same number of output tokens (as `lynx load --max-tokens` gives):
    requests/s and output tokens/s are then the same curve up to a constant factor."""
    answers = [record(started_at=1000.0 + i / 2, latency_s=1.0, completion_tokens=TOKENS_PER_ANSWER,
                      cost_eur=2e-6) for i in range(40)]
    errors = [replace(failed("http_error", "queue_full", 503), started_at=1005.0 + i) for i in range(failures)]
    return answers + errors


def series(figure) -> dict[str, object]:
    """{legend label: the axes it is drawn on} over the figure's panels."""
    return {label: axes for axes in figure.axes for label in axes.get_legend_handles_labels()[1]}


def overlaps(a, b) -> bool:
    first, second = a.get_position(), b.get_position()
    return first.x0 < second.x1 and second.x0 < first.x1 and first.y0 < second.y1 and second.y0 < first.y1


@pytest.mark.parametrize("name", list(PLOTS))
def test_no_two_panels_share_a_plotting_area(name):
    """A twin axis scales each series to its own range, so two series proportional to each other draw one line."""
    figure = PLOTS[name](steady_run(failures=2), 1000.0, 1.0)
    figure.canvas.draw()  # positions are final once laid out
    for a, b in combinations(figure.axes, 2):
        assert not overlaps(a, b), (name, a.get_ylabel(), b.get_ylabel())


def test_requests_and_tokens_per_second_are_on_separate_panels():
    figure = PLOTS["throughput.png"](steady_run(failures=2), 1000.0, 1.0)
    figure.canvas.draw()
    drawn = series(figure)
    assert drawn["ok requests/s"] is drawn["failed requests/s"]
    assert not overlaps(drawn["output tokens/s"], drawn["ok requests/s"])
    assert drawn["ok requests/s"].get_ylabel() == "requests/s"
    assert drawn["output tokens/s"].get_ylabel() == "output tokens/s"


def test_no_failed_line_is_drawn_along_the_axis_when_none_failed():
    drawn = series(PLOTS["throughput.png"](steady_run(), 1000.0, 1.0))
    assert "ok requests/s" in drawn and "failed requests/s" not in drawn


def test_write_plots_writes_each_png(tmp_path):
    names = write_plots(steady_run(failures=1), tmp_path)
    assert names == list(PLOTS)
    for name in names:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_latency_legend_names_only_series_with_points():
    drawn = series(PLOTS["latency.png"](steady_run(), 1000.0, 1.0))
    assert "time to first token (streams)" not in drawn and "failed" not in drawn
    streamed = [replace(r, stream=True, ttft_s=0.2) for r in steady_run()]
    assert "time to first token (streams)" in series(PLOTS["latency.png"](streamed, 1000.0, 1.0))
