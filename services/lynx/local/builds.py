"""`python -m lynx.local.builds PIECE...`: what `lynx up` starts, detached, when pieces of the observability stack
have never been built. Builds each piece in turn (scripts/build_tools.sh), starts it as soon as it is built, adds it to
the run's record and its state to builds.json, and logs each step with the seconds since `lynx up` started."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from lynx.service.files import write_atomically
from lynx.local.observability import BINARIES, PIECES, piece_urls, start_piece
from lynx.local.processes import wait_ready
from lynx.local.registry import record, run_dir
from lynx.local.stack import REPO, find_binary
from lynx.local.topology import Topology

BUILDER = "builds"  # the builder's name in the run's record
BUILD_TOOLS = REPO / "scripts" / "build_tools.sh"
READY_TIMEOUT_SECONDS = 300
PieceState = Literal["building", "ready", "failed"]


def states_file() -> Path:
    return run_dir() / "builds.json"


def piece_states() -> dict[str, PieceState]:
    """Each piece the builder was given: building (or waiting its turn), ready, or failed."""
    path = states_file()
    return json.loads(path.read_text()) if path.exists() else {}


def start_builder(pieces: list[str], since: float) -> subprocess.Popen:
    """The builder for ``pieces``, in a session of its own (`lynx down` stops it and its builds first), logging to
    builds.log; recorded in the run's record."""
    write_atomically(states_file(), json.dumps(dict.fromkeys(pieces, "building")))
    with (run_dir() / "builds.log").open("wb") as log:  # this run's builds only
        builder = subprocess.Popen([sys.executable, "-m", "lynx.local.builds", *pieces, "--since", f"{since:.3f}"],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    record({BUILDER: builder.pid})
    return builder


def build(piece: str) -> bool:
    """Whether scripts/build_tools.sh built ``piece`` (its output goes to this process's, the builds log)."""
    done = subprocess.run(["bash", str(BUILD_TOOLS), piece], stdout=subprocess.DEVNULL, stderr=sys.stdout)
    return done.returncode == 0 and find_binary(BINARIES[piece]) is not None


def main(argv: list[str] | None = None) -> int:
    from lynx.gateway.settings import GatewaySettings

    parser = argparse.ArgumentParser(prog="python -m lynx.local.builds", description=__doc__)
    parser.add_argument("pieces", nargs="+", choices=PIECES)
    parser.add_argument("--since", type=float, required=True, help="when `lynx up` started (Unix time)")
    args = parser.parse_args(argv)
    states: dict[str, PieceState] = dict.fromkeys(args.pieces, "building")

    def say(state: str) -> None:
        print(f"[builds] {time.time() - args.since:.0f} s after `lynx up` started: {state}", flush=True)

    topology, deadline = Topology.configured(), GatewaySettings().request_deadline_seconds
    for piece in args.pieces:
        began = time.monotonic()
        say(f"building {piece}")
        states[piece] = "failed"
        if build(piece):
            started = start_piece(piece, topology, run_dir(), dict(os.environ), deadline)
            record({process.name: process.process.pid for process in started})
            try:
                wait_ready(started, READY_TIMEOUT_SECONDS)
                states[piece] = "ready"
                say(f"{piece} built in {time.monotonic() - began:.0f} s and ready: "
                    f"{'; '.join(piece_urls(piece, topology).values())}")
            except RuntimeError as error:
                say(f"{piece} did not become ready: {error}")
        else:
            say(f"building {piece} failed (above)")
        write_atomically(states_file(), json.dumps(states))
    failed = [piece for piece, state in states.items() if state == "failed"]
    say(f"the observability stack is up without {', '.join(failed)}" if failed else "the observability stack is up")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
