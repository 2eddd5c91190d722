#!/usr/bin/env python3
"""The first requests after a decoder starts, with and without its warm-up (LYNX_DECODER_WARM_UP), side by side.

Each start (the two settings alternating) measures how long the decoder took to report ready, then sends, one
after the other: a single 32-token request three times, then a burst of 8 concurrent requests three times (16
tokens each, end-of-sequence ignored). The first of each kind against the later ones is what a start costs the
requests that meet a fresh pod.

Usage: .venv/bin/python scripts/bench_cold_start.py [--starts 4] [--output docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_common import (
    command_line, load_average, machine, median, model_name, start_decoder, stop_on_sigterm, write_section,
)
from bench_decoder import PROMPT_TOKENS, THREADS, prompt_ids
from bench_engines import lynx_service
from lynx.tools.models.cache import build

HEADING = "## The first requests after a decoder starts: with and without its warm-up"
SETTINGS = {"warm-up (default)": "true", "no warm-up": "false"}
TOKENS = 16
BURST = 8
ROUNDS = 3


def one_start(models: Path, warm_up: str, log_dir: Path) -> dict[str, float]:
    started = time.perf_counter()
    decoder = start_decoder(models, log_dir / "decoder-continuous.log", THREADS, warm_up=warm_up)
    ready = time.perf_counter() - started
    try:
        singles = [lynx_service(decoder.url, prompt_ids(1), TOKENS).first_tokens()[0] for _ in range(ROUNDS)]
        bursts = [max(lynx_service(decoder.url, prompt_ids(BURST), TOKENS).first_tokens()) for _ in range(ROUNDS)]
    finally:
        decoder.stop()
    return {"ready": ready, "single_first": singles[0], "single_later": median(singles[1:]),
            "burst_first": bursts[0], "burst_later": median(bursts[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=4, help="starts per setting")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    stop_on_sigterm()
    models = build("int4")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.starts):
        for name, warm_up in SETTINGS.items():
            with tempfile.TemporaryDirectory(prefix="lynx-bench-cold-") as log_dir:
                results[name].append(one_start(models, warm_up, Path(log_dir)))
    section = render(args, results)
    print(section)
    if args.output:
        write_section(args.output, HEADING, section)


def render(args, results: dict[str, list[dict[str, float]]]) -> str:
    argv = ["--starts", str(args.starts), "--output", "docs/BENCHMARKS.md"]
    lines = [
        HEADING, "",
        f"`{command_line('bench_cold_start.py', argv)}` on {machine()}, {model_name()} int4, {THREADS} threads; load "
        f"average {load_average():.1f} at the end. {args.starts} starts per setting, alternating. After each start: "
        f"one {PROMPT_TOKENS}-token request {ROUNDS} times, then {ROUNDS} bursts of {BURST} concurrent ones ({TOKENS} "
        "tokens each); time to first token as the client sees it (a burst: its slowest request). Medians over the "
        "starts.", "",
        "| decoder | ready after | 1st request's TTFT | later requests' TTFT | 1st burst's slowest TTFT | "
        "later bursts' |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        m = {key: median([r[key] for r in runs]) for key in runs[0]}
        lines.append(f"| {name} | {m['ready']:.1f} s | {m['single_first'] * 1000:.0f} ms | "
                     f"{m['single_later'] * 1000:.0f} ms | {m['burst_first'] * 1000:.0f} ms | "
                     f"{m['burst_later'] * 1000:.0f} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
