"""The lines of a streamed HTTP body (NDJSON events, server-sent events), split at line feeds alone.

httpx's ``aiter_lines`` splits wherever ``str.splitlines`` does, U+0085, U+2028 and U+2029 included. JSON leaves
those characters unescaped inside strings, so a generated token holding one would cut an event in two, and
neither half could be read. A line's trailing carriage return is dropped (server-sent events may end lines with
CRLF).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

LINE_FEED = b"\n"


async def body_lines(response: httpx.Response) -> AsyncIterator[str]:
    """Each line of the body as it arrives, without its line ending; bytes that are not UTF-8 read as U+FFFD."""
    pending = b""
    async for chunk in response.aiter_bytes():
        *lines, pending = (pending + chunk).split(LINE_FEED)
        for line in lines:
            yield decoded(line)
    if pending:
        yield decoded(pending)


def decoded(line: bytes) -> str:
    return line.removesuffix(b"\r").decode(errors="replace")
