#!/usr/bin/env python3
"""What one decode step of the real model costs, by batch size and context length (the pricing input).

For each batch size and context length, and for batches that mix short and long contexts, it
times decode steps of the int4 model as the engine runs them (``DecoderModel.decode_rows``, the KV
cache read and written in place) over cached contexts of those lengths (a step's time does not
depend on the cache's values, so the cache is synthetic: no prefill is needed), takes the median,
and fits

    step = fixed + per_row x rows + per_context_token x sum(contexts)

by least squares. The mixed batches show whether a row's cost depends on its neighbours' lengths
(it did when the cache was right-padded and copied each step). The coefficients are the decoder's
``LYNX_DECODER_STEP_*`` settings, which ``lynx.accounting.shares`` splits steps by.

Usage: .venv/bin/python scripts/bench_step_cost.py [--steps 12] [--output docs/COSTS.md] [--benchmarks docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench_common import load_average, machine, write_section
from lynx.accounting.shares import StepCostModel
from lynx.decoder import kv
from lynx.decoder.kv import KVPool
from lynx.decoder.model import DecoderModel
from lynx.tools.models.cache import build

BATCHES = (1, 2, 4, 8, 16)
CONTEXTS = (64, 256, 1024)
MIXED = ((64, 64, 64, 1024), (64,) * 7 + (1024,), (256,) * 7 + (1024,), (64,) * 15 + (1024,), (16, 128, 512, 1536),
         (64, 1024, 1024, 1024), (64,) * 7 + (256,), (64,) * 15 + (256,), (64, 64, 64, 2000), (256, 256, 256, 2000))
THREADS = 2
WARMUP_STEPS = 2
BENCHMARKS_HEADING = "## The decode step, KV cache copied vs in place"
START = "<!-- step-cost:start -->"
END = "<!-- step-cost:end -->"


def median_seconds(step: Callable[[], object], steps: int) -> float:
    times = []
    for index in range(WARMUP_STEPS + steps):
        started = time.perf_counter()
        step()
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_seconds(model: DecoderModel, pool: KVPool, contexts: tuple[int, ...], steps: int) -> float:
    """Median wall time of one decode step, as the engine runs it, for rows with these context lengths."""
    tokens, lengths = [1000] * len(contexts), list(contexts)
    # Each step writes at the rows' lengths, which stay as they are: every step sees the same contexts.
    return median_seconds(lambda: model.decode_rows(pool, tokens, lengths), steps)


def copying_step_seconds(model: DecoderModel, contexts: tuple[int, ...], steps: int) -> float:
    """The same on the plain path: the cache, right-padded to the longest row, fed in and a grown copy returned."""
    width = max(contexts)
    cache = [np.zeros((len(contexts), model.kv_heads, width, model.head_size), dtype=model.kv_dtype)
             for _ in model.past_names]
    ids = np.full((len(contexts), 1), 1000, dtype=np.int64)
    mask = kv.decode_attention_mask(list(contexts), width)
    return median_seconds(lambda: model.run(ids, mask, cache), steps)


def fit(samples: list[tuple[tuple[int, ...], float]]) -> StepCostModel:
    rows = np.array([[1.0, len(c), sum(c)] for c, _ in samples])
    seconds = np.array([s for _, s in samples])
    coefficients, *_ = np.linalg.lstsq(rows, seconds, rcond=None)
    return StepCostModel(*(float(c) for c in coefficients))


def render(command: str, grid: dict, model: StepCostModel, mixed: list) -> str:
    lines = [START, f"Measured with `{command}` ({THREADS} intra-op threads, int4, median of the steps):", "",
             "| rows \\ context | " + " | ".join(f"{c} tokens" for c in CONTEXTS) + " |",
             "| --- | " + " | ".join("---" for _ in CONTEXTS) + " |"]
    for batch in BATCHES:
        lines.append(f"| {batch} | " + " | ".join(f"{grid[batch, c] * 1000:.1f} ms" for c in CONTEXTS) + " |")
    lines += ["", f"Least-squares fit over all of them: step = {model.fixed_seconds * 1000:.2f} ms + "
              f"{model.per_row_seconds * 1000:.3f} ms x rows + {model.per_context_token_seconds * 1e6:.2f} us x context "
              "tokens.", "",
              "| mixed batch (contexts) | measured | fit | the longest row's share: even split / lynx's split |",
              "| --- | --- | --- | --- |"]
    for contexts, measured in mixed:
        weights = model.weights(list(contexts))
        longest = max(range(len(contexts)), key=lambda i: contexts[i])
        shown = ", ".join(map(str, contexts)) if len(contexts) <= 4 else f"{len(contexts) - 1} x {contexts[0]}, {contexts[-1]}"
        lines.append(f"| {shown} | {measured * 1000:.1f} ms | {model.predict(list(contexts)) * 1000:.1f} ms | "
                     f"{100 / len(contexts):.0f}% / {100 * weights[longest] / sum(weights):.0f}% |")
    lines.append(END)
    return "\n".join(lines)


def render_side_by_side(command: str, copying: dict, in_place: dict) -> str:
    lines = [BENCHMARKS_HEADING, "",
             f"`{command}` on {machine()}, {THREADS} intra-op threads, int4; load average {load_average():.1f} at "
             "the end. Median wall time of one decode step of rows of the same context: the plain path (the cache "
             "fed in, a grown copy returned: how lynx first decoded) and the serving path (the cache read and "
             "written in place), timed one after the other in one run. The fit of the serving path, with mixed "
             "batches, is in docs/COSTS.md (the prices use it).", "",
             "| rows \\ context | " + " | ".join(f"{c} tokens: copied / in place" for c in CONTEXTS) + " |",
             "| --- | " + " | ".join("---" for _ in CONTEXTS) + " |"]
    for batch in BATCHES:
        cells = [f"{copying[batch, c] * 1000:.1f} / {in_place[batch, c] * 1000:.1f} ms "
                 f"({copying[batch, c] / in_place[batch, c]:.2f}x)" for c in CONTEXTS]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    parser.add_argument("--output", type=Path, help="replace the step-cost section of this Markdown file")
    parser.add_argument("--benchmarks", type=Path,
                        help="write the in-place step against the copying one, side by side, as a section of this file")
    args = parser.parse_args()
    model = DecoderModel(build("int4") / "decoder", THREADS)
    pool = model.kv_pool(max(BATCHES), max(max(c) for c in MIXED) + 1)
    grid = {(batch, context): step_seconds(model, pool, (context,) * batch, args.steps)
            for batch in BATCHES for context in CONTEXTS}
    mixed = [(contexts, step_seconds(model, pool, contexts, args.steps)) for contexts in MIXED]
    cost = fit([((c,) * b, s) for (b, c), s in grid.items()] + mixed)
    command = "python scripts/bench_step_cost.py" + (f" --steps {args.steps}" if args.steps != 12 else "")
    if args.benchmarks:
        copying = {(batch, context): copying_step_seconds(model, (context,) * batch, args.steps)
                   for batch in BATCHES for context in CONTEXTS}
        in_place = {(batch, context): step_seconds(model, pool, (context,) * batch, args.steps)
                    for batch in BATCHES for context in CONTEXTS}
        write_section(args.benchmarks, BENCHMARKS_HEADING, render_side_by_side(
            f"{command} --benchmarks {args.benchmarks}", copying, in_place))
    section = render(command, grid, cost, mixed)
    print(section)
    print(f"LYNX_DECODER_STEP_FIXED_SECONDS={cost.fixed_seconds:.6f} LYNX_DECODER_STEP_ROW_SECONDS={cost.per_row_seconds:.6f} "
          f"LYNX_DECODER_STEP_CONTEXT_TOKEN_SECONDS={cost.per_context_token_seconds:.3g}")
    if args.output:
        text = args.output.read_text()
        if START in text:
            text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text += "\n" + section + "\n"
        args.output.write_text(text)


if __name__ == "__main__":
    main()
