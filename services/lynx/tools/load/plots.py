"""PNG plots of a load run over time: throughput, latency and cost. Matplotlib's Agg canvas, no pyplot state."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lynx.tools.load.driver import RequestRecord
from lynx.tools.load.report import percentile

# Time bins: about this many over the run, never shorter than a second.
BINS = 60


def bin_width(span_s: float) -> float:
    return max(1.0, math.ceil(span_s / BINS))


def binned(records: Sequence[RequestRecord], at: Callable[[RequestRecord], float], origin: float,
           width: float) -> dict[int, list[RequestRecord]]:
    """Records by the time bin that ``at`` (seconds since ``origin``) falls in."""
    bins: dict[int, list[RequestRecord]] = {}
    for record in records:
        bins.setdefault(int((at(record) - origin) // width), []).append(record)
    return bins


def new_figure(title: str, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """One panel per quantity, stacked over a shared time axis: never a twin y axis, whose own scale can lay a
    series exactly over another (requests/s and tokens/s when every answer has the same length)."""
    figure = Figure(figsize=(9, 2.5 + 2 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    stacked = list(figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0])
    stacked[0].set_title(title)
    stacked[-1].set_xlabel("seconds since the first request")
    for axes in stacked:
        axes.grid(alpha=0.3)
    return figure, stacked


def throughput(records: Sequence[RequestRecord], origin: float, width: float) -> Figure:
    figure, (requests, tokens) = new_figure(f"Throughput (requests ending in each {width:g} s)", panels=2)
    bins = binned(records, lambda r: r.finished_at, origin, width)
    count = max(bins, default=-1) + 1
    edges = [b * width for b in range(count + 1)]

    def per_second(value: Callable[[RequestRecord], float]) -> list[float]:
        return [sum(value(r) for r in bins.get(b, [])) / width for b in range(count)]

    requests.stairs(per_second(lambda r: r.ok), edges, label="ok requests/s")
    if any(not r.ok for r in records):  # a line at zero would only lie on the axis
        requests.stairs(per_second(lambda r: not r.ok), edges, color="tab:red", label="failed requests/s")
    requests.set_ylabel("requests/s")
    requests.set_ylim(bottom=0)
    tokens.stairs(per_second(lambda r: r.completion_tokens or 0), edges, color="tab:green", label="output tokens/s")
    tokens.set_ylabel("output tokens/s")
    tokens.set_ylim(bottom=0)
    figure.legend(loc="outside lower center", ncols=3)
    return figure


def latency(records: Sequence[RequestRecord], origin: float, width: float) -> Figure:
    figure, (axes,) = new_figure("Latency of each request, by when it was sent")
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    axes.scatter([r.started_at - origin for r in ok], [r.latency_s for r in ok], s=8, alpha=0.5, label="latency (ok)")
    streams = [r for r in ok if r.ttft_s is not None]
    if streams:  # else its legend entry would name points that are not there
        axes.scatter([r.started_at - origin for r in streams], [r.ttft_s for r in streams], s=8, alpha=0.5,
                     marker="^", label="time to first token (streams)")
    if failed:
        axes.scatter([r.started_at - origin for r in failed], [r.latency_s for r in failed], s=14, color="tab:red",
                     marker="x", label="failed")
    bins = binned(ok, lambda r: r.started_at, origin, width)
    centres = [(b + 0.5) * width for b in sorted(bins)]
    axes.plot(centres, [percentile([r.latency_s for r in bins[b]], 95) for b in sorted(bins)], color="black",
              linewidth=1, label=f"latency p95 per {width:g} s")
    axes.set_ylabel("seconds")
    axes.set_ylim(bottom=0)
    figure.legend(loc="outside lower center", ncols=4)
    return figure


def cost(records: Sequence[RequestRecord], origin: float, width: float) -> Figure:
    figure, (per_token, spent) = new_figure(
        "Cost per 1k output tokens of each answer, and the run's cumulative cost", panels=2)
    priced = [r for r in records if r.ok and r.cost_eur is not None and r.completion_tokens]
    per_token.scatter([r.finished_at - origin for r in priced],
                      [r.cost_eur / r.completion_tokens * 1000 for r in priced], s=8, alpha=0.5,
                      label="EUR per 1k output tokens")
    per_token.set_ylabel("EUR per 1k output tokens")
    per_token.set_ylim(bottom=0)
    charged = sorted((r for r in records if r.cost_eur is not None), key=lambda r: r.finished_at)
    running, total = [], 0.0
    for record in charged:
        total += record.cost_eur
        running.append(total)
    spent.plot([r.finished_at - origin for r in charged], running, color="tab:purple", label="cumulative EUR")
    spent.set_ylabel("cumulative EUR")
    spent.set_ylim(bottom=0)
    figure.legend(loc="outside lower center", ncols=2)
    return figure


PLOTS = {"throughput.png": throughput, "latency.png": latency, "cost.png": cost}


def write_plots(records: Sequence[RequestRecord], out_dir: Path) -> list[str]:
    """Writes the PNGs into ``out_dir``; returns their file names."""
    origin = min((r.started_at for r in records), default=0.0)
    span = max((r.finished_at for r in records), default=origin) - origin
    width = bin_width(span)
    for name, draw in PLOTS.items():
        draw(records, origin, width).savefig(out_dir / name, dpi=110)
    return list(PLOTS)
