"""`lynx load`: drive a gateway for a while, show progress on one line, write report.md and the plots."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import shlex
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import httpx

if TYPE_CHECKING:
    from lynx.tools.load.driver import LoadSpec, RequestRecord
    from lynx.tools.load.report import Machine, MemoryChange

DEFAULT_URL = "http://127.0.0.1:8080"
PROGRESS_SECONDS = 0.5


def add_load_command(commands) -> None:
    load_cmd = commands.add_parser(
        "load", help="drive chat completions through a gateway; report throughput, latency, cost and memory",
        description="Without --key, creates the tenants load-1 ... load-N in the local tenants file (the one "
                    "`lynx up`'s gateway reads), drives with their keys and removes them when it ends.")
    load_cmd.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    load_cmd.add_argument("--key", action="append", default=[], help="an API key; repeat for a mix of tenants")
    load_cmd.add_argument("--tenants", type=int, default=2, help="without --key: how many local tenants (default 2)")
    until = load_cmd.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", type=float, help="seconds during which requests are sent")
    until.add_argument("--requests", type=int, help="how many requests to send")
    load_cmd.add_argument("--concurrency", type=int, default=4, help="requests under way at once (default 4)")
    load_cmd.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request (default 16)")
    load_cmd.add_argument("--stream-share", type=float, default=0.5, help="fraction streamed (default 0.5)")
    load_cmd.add_argument("--prompt", help="the user message (default: a question about Python)")
    load_cmd.add_argument("--timeout", type=float, default=120, help="seconds one request may take (default 120)")
    load_cmd.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                          help="a service whose memory (its /metrics) is reported; repeat (default: the gateway at "
                               "--url and the tokenizer, retriever and decoder its settings name)")
    load_cmd.add_argument("--out", type=Path, help="where report.md and the PNGs go (default: a new folder under "
                                                   "~/.cache/lynx/work/load/)")
    load_cmd.set_defaults(run=run_load)


def command_line(args: argparse.Namespace) -> str:
    """The command, for the top of the report: its options spelt out, keys hidden."""
    parts = ["lynx", "load", "--url", args.url]
    parts += [arg for _ in args.key for arg in ("--key", "KEY")] if args.key else ["--tenants", str(args.tenants)]
    parts += ["--duration", f"{args.duration:g}"] if args.duration is not None else ["--requests", str(args.requests)]
    parts += ["--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens),
              "--stream-share", f"{args.stream_share:g}"]
    if args.prompt is not None:
        parts += ["--prompt", args.prompt]
    for service in args.service:
        parts += ["--service", service]
    return shlex.join([*parts, "--out", str(args.out)])


@contextlib.contextmanager
def load_keys(args: argparse.Namespace) -> Iterator[tuple[str, ...]]:
    """The keys given, or those of the tenants load-1 ... load-N, made in the local gateway's tenants file for the
    run and removed after it."""
    if args.key:
        yield tuple(args.key)
        return
    from lynx.gateway.settings import GatewaySettings
    from lynx.accounting.tenants import TenantRegistry

    registry = TenantRegistry(GatewaySettings().tenants_file)
    names = [f"load-{n}" for n in range(1, args.tenants + 1)]
    print(f"no --key: tenants {', '.join(names)} in {registry.path} for this run", file=sys.stderr)
    with registry.temporary(*names) as keys:
        yield keys


def default_out(now: datetime) -> Path:
    """A folder of its own for each run, named by its start (UTC)."""
    from lynx.service.settings import work_dir

    return work_dir("load") / now.strftime("%Y%m%dT%H%M%SZ")


def services_to_watch(args: argparse.Namespace) -> dict[str, str]:
    if args.service:
        pairs = [service.partition("=") for service in args.service]
        if any(not name or not url for name, _, url in pairs):
            raise SystemExit("lynx load: --service takes NAME=URL")
        return {name: url for name, _, url in pairs}
    from lynx.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    return {"gateway": args.url, "tokenizer": settings.tokenizer_url, "retriever": settings.retriever_url,
            "decoder": settings.decoder_url}


class Progress:
    """One line on stderr, rewritten in place: elapsed time, requests done, requests/s, errors."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.started = time.monotonic()
        self.done = self.errors = 0

    def count(self, record: RequestRecord) -> None:
        self.done += 1
        self.errors += not record.ok

    def show(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self.out.write(f"\r{elapsed:7.1f} s  {self.done:6d} done  {rate:6.2f} req/s  {self.errors:4d} errors")
        self.out.flush()

    async def keep_showing(self) -> None:
        while True:
            self.show()
            await asyncio.sleep(PROGRESS_SECONDS)


async def measure(spec: LoadSpec, services: dict[str, str]) -> tuple[
        list[RequestRecord], float, list[MemoryChange], Machine]:
    """Memory, the run, memory again: (records, the run's wall seconds, memory changes, this machine's load)."""
    from lynx.tools.load.driver import drive
    from lynx.tools.load.memory import sample_memory
    from lynx.tools.load.report import Machine, MemoryChange

    before, load_start = await sample_memory(services), os.getloadavg()[0]
    progress = Progress()
    ticker = asyncio.create_task(progress.keep_showing())
    started = time.perf_counter()
    try:
        records = await drive(spec, on_record=progress.count)
    finally:
        duration = time.perf_counter() - started
        ticker.cancel()
        progress.show()
        sys.stderr.write("\n")
    after = await sample_memory(services)
    return (records, duration, [MemoryChange(name, before[name], after[name]) for name in services],
            Machine(os.cpu_count() or 0, load_start, os.getloadavg()[0]))


def require_load_extra() -> None:
    """matplotlib and prometheus-client come with the load extra, not with lynx itself: say so before the run."""
    missing = [name for name in ("matplotlib", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"lynx load needs the load extra ({', '.join(missing)} missing): pip install 'lynx[load]'")


def run_load(args: argparse.Namespace) -> None:
    require_load_extra()
    from lynx.tools.load.driver import DEFAULT_PROMPT, LoadSpec
    from lynx.tools.load.plots import write_plots
    from lynx.tools.load.report import render_markdown, summarize

    args.out = args.out or default_out(datetime.now(UTC))
    services = services_to_watch(args)
    with load_keys(args) as keys:
        try:
            spec = LoadSpec(base_url=args.url, keys=keys, concurrency=args.concurrency, duration_s=args.duration,
                            requests=args.requests, max_tokens=args.max_tokens, stream_share=args.stream_share,
                            prompt=args.prompt or DEFAULT_PROMPT, timeout_s=args.timeout)
        except ValueError as error:
            raise SystemExit(f"lynx load: {error}") from None
        try:
            records, duration, memory, machine = asyncio.run(measure(spec, services))
        except (RuntimeError, httpx.HTTPError) as error:  # the gateway is down, or refused the first key
            raise SystemExit(f"lynx load: {args.url}: {error}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(records, args.out)
    markdown = render_markdown(summarize(records, duration, memory, machine), command_line(args), plots)
    (args.out / "report.md").write_text(markdown)
    print(markdown)
    print(f"written: {args.out / 'report.md'}, {', '.join(str(args.out / p) for p in plots)}", file=sys.stderr)
